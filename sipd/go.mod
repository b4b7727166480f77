module voxagent/sipd

go 1.24.0

require (
	github.com/coder/websocket v1.8.15
	github.com/emiago/sipgo v1.7.3
	github.com/google/uuid v1.6.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/gobwas/pool v0.2.1 // indirect
	github.com/gobwas/ws v1.4.0 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/icholy/digest v1.2.0 // indirect
	github.com/stretchr/testify v1.11.1 // indirect
	golang.org/x/sync v0.16.0 // indirect
	golang.org/x/sys v0.41.0 // indirect
	gotest.tools/v3 v3.5.2 // indirect
)
