//go:build race

package sockio

// raceEnabled: the race detector makes sync.Pool drop items at random.
const raceEnabled = true
