//go:build tools

// Package tools pins the nats-server that `make tools` builds; go.sum pins every dependency.
package tools

import _ "github.com/nats-io/nats-server/v2"
