//go:build tools

// Package tools pins the nats CLI that `make tools` builds; go.sum pins every dependency.
package tools

import _ "github.com/nats-io/natscli/nats"
