//go:build !race

package sockio

const poisonFreed = false
