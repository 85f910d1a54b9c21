package main

import "time"

// The front's connection limits (-max-conns, -max-conns-per-addr) are
// httpcarrier.LimitListener's, with its defaults.

// defaultTunnelIdle is -tunnel-idle-timeout's default: the tunnel
// counterpart of the front's 2-minute keep-alive idle timeout, longer
// since a tunnel's protocol may be quiet for a while (a held-open TLS
// session), short enough that idle tunnels do not pile up.
const defaultTunnelIdle = 10 * time.Minute
