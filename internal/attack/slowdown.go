package attack

// Slowdown is how many times more CPU every packet and handshake costs in
// this build than in a normal one: 1, or 8 under the race detector, whose
// instrumentation costs 5 to 20 times (go.dev/doc/articles/race_detector).
// The attacker shares the listener's process and cores, so a paced
// attacker divides its rate by Slowdown (see Paced): a flood meant to stay
// below what the listener drains must not turn into a volumetric one,
// which no listener logic answers, only because the build is slower.
const Slowdown = slowdown

// Paced returns n, an attacker's rate or concurrency in a normal build,
// scaled to this build: n / Slowdown, at least 1.
func Paced(n int) int { return max(1, n/Slowdown) }
