// Package cases aims the attackers of package attack at the listeners of
// this module, one case per row of the table in docs/security.md. The FSP
// rows that forge packets are tests in psi/fsp (TestAttack*).
package cases

import "github.com/postsockets/postsockets/internal/attack"

// A Row is one attack case: Run sets up a fresh listener, runs the case
// with o and tears it down.
type Row struct {
	Name string
	// Open names the fix this row waits for, if it has not landed: the
	// tests then run it but do not assert.
	Open string
	Run  func(o attack.Options) (*attack.Result, error)
}

// All is every row that needs no access to a stack's internals.
var All = []Row{
	{Name: "TCP slowloris", Run: TCPSlowloris},
	{Name: "TCP slowloris from 64 /24 prefixes", Run: TCPSlowloris64},
	{Name: "QUIC handshakes never completed", Run: QUICHandshakeFlood},
	{Name: "QUIC connections and forks never accepted or read", Run: QUICUnread},
	{Name: "QUIC forks never accepted, each with a byte sent", Run: QUICForkFlood},
	{Name: "QUIC forks accepted and read, each with a byte sent", Run: QUICForkRead},
	{Name: "QUIC forks fed 128-byte frames nobody reads", Run: QUICUnreadFrames},
	{Name: "FSP connections and clones never accepted or read", Run: FSPUnaccepted},
	{Name: "FSP observer with a faster path", Run: FSPObserver},
	{Name: "Rendezvous fill", Run: RendezvousFill},
	{Name: "Rendezvous slow-body clients", Run: RendezvousSlowBody},
	{Name: "postsockets rendezvous slow-body clients", Run: CLIRendezvousSlowBody},
	{Name: "QUIC junk datagrams, events on", Run: QUICJunk},
	{Name: "FSP junk datagrams", Run: FSPJunk},
	{Name: "QUIC junk datagrams to the port FSP and QUIC share", Run: SharedPortJunk},
	{Name: "QUIC junk from one /24 to the port FSP and QUIC share", Run: SharedPortPrefixJunk},
	{Name: "FSP connections held from one address", Run: FSPConnsOneSource},
	{Name: "QUIC connections held from one address", Run: QUICConnsOneSource},
	{Name: "TCP connections held from one address", Run: TCPConnsOneSource},
	{Name: "TCP connections held from four addresses of one /24", Run: TCPConnsOnePrefix},
	{Name: "TCP clients sending large messages to a slow Sink", Run: TCPSinkMessages},
}
