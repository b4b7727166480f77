"""LiveKit: rooms, join tokens, agent dispatch and its webhooks."""
