// Package fsp implements the Flexible Session Protocol (FSP, version 0)
// over UDP: an encrypted, reliable, message-delimited transport whose
// connections are identified by a pair of 32-bit upper-layer thread IDs
// (ALFIDs) rather than by addresses, so a connection follows its peer
// across address changes.
//
// Use it on its own like quic-go:
//
//	l, _ := fsp.Listen(addr, &fsp.Config{Security: sec})
//	c, _ := l.Accept(ctx)
//	msg, _ := c.ReceiveMessage(ctx)
//
//	c, _ := fsp.Dial(ctx, addr, &fsp.Config{Security: sec})
//	c.SendMessage(ctx, msg)
//
// or over any net.PacketConn with a Transport (an ICE connection, an
// emulated link, a socket shared with QUIC: FSP datagrams always start
// with a zero octet, QUIC ones have bit 0x40 set, and non-FSP datagrams
// are handed out by Transport.ReadNonFSPPacket). Stack adapts FSP to
// psi.Stack.
//
// # Protocol
//
// Every datagram starts with a 28-octet fixed header: version (0),
// opcode, header stack pointer (the offset of the payload), flags
// (end-of-transaction, ack-request, key phase, abort, 0x10: 0-RTT
// allowed on RESTORE and ticket received on an initiator's protected
// packet, 0x20: 0.5-RTT, reset token request, reset token), the
// advertised receive
// window in packets (24 bits), the sequence number, the expected sequence
// number (cumulative acknowledgement), the packet number, and the
// destination and source ALFIDs. Optional headers (CONNECT_PARAM,
// EPHEMERAL_KEY, SELECTIVE_NACK) are stacked between the fixed header and
// the header stack pointer. The opcodes are those of the reference
// implementation: INIT_CONNECT=1, ACK_INIT_CONNECT, CONNECT_REQUEST,
// ACK_CONNECT_REQ, RESET, PERSIST, PURE_DATA, ADJOURN, ACK_FLUSH, RESTORE,
// RELEASE, MULTIPLY, KEEP_ALIVE=13, and CLIENT_AUTH=14 and NEW_TICKET=15
// (ours).
//
// Aborting a message (Conn.AbortMessage, psi.MessageAborter): the
// sender drops the packets of the message not yet sent, keeps those sent
// in reliability (the receiver needs every sequence number), and ends
// the transaction with an abort marker: a data packet without payload
// flagged EOT and ABORT (0x08; ABORT without EOT is malformed). The
// marker may use one sequence number beyond the peer's receive window,
// since taking it frees the window the message holds. The receiver drops
// what it holds unread of the message, and ReadMessage returns, once, an
// error wrapping post.ErrReset (framer.ErrAborted) where the message
// would have gone on; the next message follows. On a milk clone the
// aborted message is dropped like a superseded one and its reader, which
// only gets whole messages, never hears of it.
//
// Connection setup uses a stateless cookie: INIT_CONNECT carries the
// initiator's nonce; ACK_INIT_CONNECT returns a cookie, a timestamp and a
// MAC over the initiator's address, ALFID, nonce and the timestamp under
// a listener secret rotated every 30 s, so the listener keeps no state
// per peer; CONNECT_REQUEST echoes the cookie with the nonce and an X25519
// public key; ACK_CONNECT_REQ carries the responder's nonce and key, a
// flags octet, its credential (certificate chain and a signature over the
// transcript with the certificate key: Ed25519, ECDSA or RSA-PSS) and a
// key-confirmation MAC. The transcript binds both ALFIDs, nonces,
// ephemeral keys and CONNECT_PARAMs, the flags and the responder's chain.
// The initiator verifies the chain with psi.Security.VerifyPeer (pins, a
// PSK or CA roots). Handshake packets carry a truncated HMAC-SHA256 tag
// under a key derived from the PSK (if any) and the initiator's ALFID.
// A cookie is good for 30 s. A CONNECT_REQUEST whose cookie no longer
// checks out (a listener too busy to get to it in time, or restarted)
// gets a fresh one: an ACK_INIT_CONNECT with the stale cookie after the
// new one, 92 bytes against the request's 164 at least (1,232 padded).
// The initiator takes it only if the stale cookie is its own, and sends
// CONNECT_REQUEST again at once, at most once per 2 s; so a busy
// listener delays a dial, within its HandshakeTimeout, but does not make
// it repeat a dead cookie until it times out.
//
// Client authentication: with a PSK, CONNECT_REQUEST's tag and the master
// secret prove that the initiator holds it, and its identity is the
// PSK-derived certificate, as on the TLS stacks. A listener with
// ClientAuth sets a flag in ACK_CONNECT_REQ. The initiator then sends
// CLIENT_AUTH (opcode 14), its first packet protected under the new keys,
// so its identity is not sent in clear: its chain (Certificates[0], or the
// PSK-derived certificate) and a signature over the transcript and its
// own chain. It repeats it, under fresh packet numbers, until the
// responder answers, and Dial returns only then. The responder accepts
// nothing else from the initiator before it; it checks the chain with
// VerifyPeer(chain, true) and the signature, and only then hands the
// connection to Accept (without client authentication: on the first
// packet protected with the new keys). Both credentials must fit 16 KiB
// (at most 8 certificates); a larger client chain fails Dial with
// post.ErrNotSupported, and a larger listener chain Listen (and
// Stack.CheckSecurity, so a race's listener leaves FSP out).
//
// Handshake flights never rely on IP fragmentation: every handshake
// datagram fits BaseDatagramSize (1,232 octets, the UDP payload of a
// 1,280-byte IPv6 path). ACK_CONNECT_REQ and CLIENT_AUTH carry their
// flight in fragments (offset, total length, chunk), each a complete
// packet with its own tag or AEAD, reassembled in at most 16 KiB; a
// fragment that overlaps another or disagrees on the length is dropped.
// The initiator pads CONNECT_REQUEST to BaseDatagramSize, and the
// listener sends at most three times the CONNECT_REQUEST bytes it
// received (as QUIC before address validation, though the cookie already
// proved the address); the initiator repeats CONNECT_REQUEST for each
// three fragments received while some are missing, so a long listener
// chain costs one more round trip per 3.6 KB.
//
// Path MTU (RFC 8899, datagram PLPMTUD; pmtud.go): a connection starts
// at BaseDatagramSize, the base PLPMTU, which any path of 1,280 bytes
// carries. While it has data to send it probes its active path with a
// KEEP_ALIVE carrying a PATH_CHALLENGE and padded (encrypted zeros) to
// the size tried: MaxDatagramSize (1,452) first, then the ceiling
// (Config.MaxPathMTU: by default JumboDatagramSize, 8,972, on a UDP
// socket and MaxDatagramSize on any other net.PacketConn), then a
// binary search between the largest size confirmed and the smallest
// that failed, to within 8 bytes. The peer's PATH_RESPONSE
// confirms a probe; three probes of one size unanswered within max(2
// PTO, 50 ms), or a local EMSGSIZE, make it too big: on a UDP socket the
// kernel refuses a probe above the local interface's MTU at once, so an
// Ethernet path (1,500) costs no wait for the jumbo sizes, and loopback
// (65,536) or a 9,000-byte link finds 8,972. A probe above 1,452 lost
// rather than refused (a peer that takes no more, or a path narrower
// than the local link) ends the search at 1,452. A writer waits for the
// search (at most 64 packets packetized ahead) only until
// MaxDatagramSize is confirmed. New data is packetized at the size
// confirmed (PathMTU, Paths, post.Path.MTU), each write in as few
// packets as that size allows, of one size (whole 16-byte blocks) but a
// shorter last: a 64 KiB write takes 8 packets of 8,192 bytes at the
// jumbo size, so writes of one size leave in GSO messages of equal
// segments, not one ended by each write's tail. A completed search runs
// again after 10 minutes, and a new active path starts over at the base;
// a clone starts where its parent is.
// Black holes (RFC 8899 section 4.3): a probe timeout alone is no
// evidence (a lost tail, an outage, a stalled host cause it too). Three
// loss timer expiries in a row with a packet above the base size
// unacknowledged, and none acknowledged meanwhile, make the connection
// test the path: a probe at the current size and one at the base size
// leave back to back, and two rounds in a row where the small one is
// answered and the large one (sent first) is not drop the size to the
// base and restart the search, probing the size it fell from first. A
// path whose MTU falls mid-transfer costs a few probe timeouts and two
// round trips; random loss, an outage or a flow of small packets keeps
// the size. Stats.MTUFallbacks counts the falls
// (docs/benchmarks.md, "Path MTU"). A packet keeps its
// sequence number when retransmitted, so data packetized at a larger
// size that no longer fits is resent in FRAGMENT packets: the FRAGMENT
// extension (type 0x18, 8 octets: offset and total length of the
// payload, two octets each, the offset below the total) marks a
// complete packet, under its own packet number, carrying that part of
// the sequence number's payload; the receiver reassembles at most eight
// sequence numbers at once inside its receive window (a fragment for a
// ninth displaces the one farthest from delivery, or is dropped if it
// is the farthest), takes the sequence number only when whole, and
// acknowledges it as a whole, so it is retransmitted as a whole. On
// Linux a Transport sets IP_PMTUDISC_PROBE on its socket (Don't
// Fragment, no local fragmentation, ICMP ignored), so probes measure the
// path itself. Config.DisablePathMTUDiscovery keeps every datagram
// within the base. A receiver, dialer or listener, takes datagrams up
// to its own Config.MaxPathMTU, so a peer's search stops there, and one
// above MaxDatagramSize only once authenticated, on an established
// connection. A listener charges each packet a connection buffers to
// its memory budget by the buffer it holds: about 9.6 KB for a jumbo
// datagram's, 1.7 KB for another's. The first jumbo datagram charges
// room for four jumbo buffers, held until the close, so that the
// connection always makes progress; without that room the datagram is
// dropped and the peer's probe of that size is lost. Past those four,
// jumbo buffers are charged as packets fill them, like the window's
// room ("Flow control and memory" below), and one without room is dropped
// unacknowledged like any packet without room. A receive window still counts
// packets of MaxPayload bytes: the receiver counts what its unread
// packets carry beyond that as taken window, a sender sends a jumbo
// packet only within the bytes of the window last advertised, and the
// receiver drops one beyond its byte room (conn_jumbo.go), so a window
// holds about Config.ReceiveWindow bytes whatever the packet size.
// Handshake datagrams stay within BaseDatagramSize whatever the ceiling. A resumption ticket
// is issued only if RESTORE carrying it fits BaseDatagramSize (a client
// chain of more than about 1 KB gets none). Conn.PeerCertificates returns the
// peer's verified chain on both ends; clones and InstallKey keep it.
//
// Refusals are fast and fail with post.ErrAuthentication: a listener
// answers an INIT_CONNECT whose tag fails under its key (a PSK mismatch)
// with a RESET carrying reason ResetAuthentication, smaller than the
// request and tagged under a key derived from the initiator's nonce, so
// only that initiator believes it; it keeps no state for it. Once keys
// exist, either end that refuses the other's credentials (wrong chain, pin
// or signature, no client certificate) says so in a protected RESET with
// that reason, and the other end fails at once; a listener reports such
// refusals on Listener.Refused (a peer-to-peer listener, waiting for one
// peer, stops there). Listen without
// Certificates or a PSK, and Dial with nothing to verify the listener by
// (no PSK, PinnedKeys, RootCAs or ServerName, nor InsecureSkipVerify),
// fail at once with an error that says what to configure. Without a
// ServerName, a chain is checked against the listener's IP address.

// Resumption and 0-RTT: once a connection is confirmed (on a 0-RTT
// resumption, right after its answer, ahead of any 0.5-RTT data), the
// listener sends the initiator a NEW_TICKET (protected; no sequence
// number, so the initiator acknowledges it: FlagTicketAck, 0x10, on
// every protected packet of the connection once one came, and an
// acknowledgement at once; until then the listener sends a new ticket
// after max(RTO, 50 ms), doubling up to 60 s, until the connection ends
// or, once the initiator released it, a second passes without a packet
// from it (a client that closed takes one in its time-wait). Before
// the initiator confirms a 0-RTT resumption the timer waits: a RESTORE
// repeated meanwhile, which says the answer and so the ticket after it
// went unread, gets a new ticket after the answer again, as does the
// copy of RESTORE carrying the first message, once, within the
// amplification bound.
// A listener before 2 December sent it once and ignores the flag; an
// initiator before that never sets it, and gets a ticket at each
// resend): a ticket nonce and a ticket sealed
// with AES-128-GCM under a ticket key of the listener's, which rotates
// every hour (the previous key still opens), so the listener keeps no
// state per client. The ticket holds its issue time, the listener's
// smoothed RTT then (a 0-RTT connection handed to Accept before any round
// trip starts from it, RFC 9002 §6.2.2), the resumption
// secret (from the master secret and the ticket nonce), a digest of the
// listener's certificate chain, and the client's verified chain. The
// initiator keeps it in Security.SessionCache (an Association's cache)
// under "fsp:" + ServerName + "|" + address, with the listener's chain.
// The next Dial there takes it (and marks it taken: it carries 0-RTT
// data once; dials after it, until a newer ticket replaces it, resume on
// it without 0-RTT, as crypto/tls reuses a TLS 1.3 ticket for QUIC and
// TCP, so concurrent dials all resume; an observer can link the
// connections that present one ticket, as there), checks the
// stored chain against its own trust settings (VerifyPeer; no signature
// is checked, and the cache may be shared by other settings) and sends
// RESTORE instead of INIT_CONNECT: its nonce, the ticket's age as it
// measured it, the ticket, and an X25519 key, tagged under a binder key
// from the resumption secret. A listener that opens the ticket, finds
// its own identity in it, checks the binder and, with ClientAuth, finds
// that the client's chain still passes VerifyPeer (a certificate expired
// since then sends the client to a full handshake, as crypto/tls does on
// QUIC and TCP) answers with
// ACK_CONNECT_REQ carrying its nonce, its X25519 key, a resumed flag and
// the key confirmation, tagged under the binder key: one round trip, no
// certificate, no signature. The master secret mixes the fresh X25519
// output with the resumption secret (and the PSK), so everything after
// that round trip has forward secrecy again. Both ends keep the
// identities of the session that issued the ticket (PeerCertificates).
// A ticket the listener does not take (another listener or identity, an
// old key, expired) gets the ACK_INIT_CONNECT of a full handshake, which
// the initiator continues with the same nonce. Answers to RESTORE are
// smaller than it, since it carries the ticket (0.5-RTT data, below,
// stays within three times it).
//
// With Config.Allow0RTT (psi.Config.Allow0RTT, which the carrier sets
// for an idempotent first message) and a ticket, Dial sends RESTORE,
// flagged as allowing 0-RTT, and returns at once, as a QUIC client sends
// its ClientHello: a caller that reads first has the listener's answer
// after one round trip. The first whole message written before the
// handshake ends, if it fits one datagram and (through the psi
// transient) is marked Idempotent, leaves at once in a copy of that
// RESTORE (same nonce, X25519 key and ticket) that carries it sealed
// under an early key derived from the resumption secret and the client
// nonce only (no forward secrecy); the copy stands for RESTORE in
// retransmissions. Any other call before the handshake ends waits for
// it, and a first message written after it goes under the session keys
// at once. A listener with Allow0RTT that takes the ticket of a RESTORE
// allowing 0-RTT says so in ACK_CONNECT_REQ (helloEarly). It takes the
// first message from the RESTORE or from a copy of it that arrives
// before the initiator confirms, only from the address and ALFID the
// RESTORE came from and under its binder key, holds at most that one
// message, answers the copy with ACK_CONNECT_REQ saying it took it
// (helloTaken; smaller than the copy), and delivers the message.
//
// 0.5-RTT data: such a listener hands the connection to Accept as soon
// as it answered a fresh RESTORE allowing 0-RTT (the ticket opened, the
// binder checked, the strike register saw the nonce first), with or
// without a message, and what the application writes on it leaves at
// once under the session keys, before the initiator confirms, as QUIC's
// 0.5-RTT data does: a client that reads first gets the listener's first
// message one round trip after Dial. Until the initiator's first
// authenticated packet validates its address the listener sends there at
// most three times the bytes of the RESTOREs it received from it, its
// answers included (RFC 9000 §8.1); the rest waits, no probe timeout
// fires while it does, and a RESTORE repeated (the client lacks the
// answer) raises the bound and sends the answer and the data in flight
// again, with a new ticket. A 0-RTT RESTORE and its copy are padded to
// BaseDatagramSize for that room, as QUIC pads a client's Initial. An
// initiator that gets protected datagrams before the answer (0.5-RTT
// data or the ticket overtook it, or outlived its loss) keeps up to four
// of at most MaxDatagramSize bytes, unopened, and reads them once the
// answer gives the keys; it drops any beyond (retransmission recovers
// them), and all of them if the dial goes on with a full handshake.
// The packets sent before the confirmation carry a header flag
// (flagHalfRTT) so that the initiator does not take them for the
// confirmation's answer and goes on asking for one. A Fork on the listener's side waits for the
// confirmation; a confirmation that does not come within the handshake
// timeout ends the connection. A copy that arrives before its RESTORE is
// a RESTORE itself. The message is the initiator's sequence
// number 1 however it travels: unless the answer the initiator got says
// the listener took it, it is sent again after the handshake, first, and
// a listener that took it as 0-RTT data drops that copy as a duplicate,
// so nothing is lost, duplicated or reordered.
//
// Conn.Used0RTT reports on both ends whether the listener accepted 0-RTT
// (as QUIC's does); at the initiator, also that the first message did
// not wait for the handshake. Conn.HandshakeErr says why a handshake
// failed (the connection closed before it ended): a 0-RTT dial refused
// or never answered delivered nothing, so the carrier sends its first
// message again on another stack. Replay protection follows
// RFC 8446 §8: a ticket carries 0-RTT data once at the client, and a
// listener takes a RESTORE only if the send time it claims (issue time
// plus age) is within 10 s of its clock and its nonce was not seen: a
// strike register remembers each taken nonce for 20 s, bounded to 16384
// entries (when full, RESTOREs get a full handshake). A second register
// of the same bounds remembers the tickets it took 0-RTT on: two dials
// that took one ticket at the same instant (the client's mark is not
// atomic over a shared cache) both resume, the second without 0-RTT
// (when full, every 0-RTT RESTORE resumes without), as QUIC's listener
// takes 0-RTT on a ticket once. A replayed RESTORE, or copy, gets
// at most the cookie of a full handshake, or while the connection it made
// is pending the same answer again, so its 0-RTT message is delivered
// once per listener. Ticket keys belong to one listener and die with it, so a
// ticket opens only where that listener's register sees every copy.
//
// Keys: the session master secret is HKDF-Extract over the X25519 output
// and the PSK, salted with both nonces. Each connection derives its
// per-direction traffic secrets from the master secret and an ALFID
// pair, so a clone derives its own keys from the same master secret
// without a new exchange.
//
// Clones (Conn.Fork, MULTIPLY): the forking end registers a fresh ALFID
// (never reused within the session, so keys never repeat), derives keys
// from it and the parent's ALFID at the peer, and sends MULTIPLY packets
// to the parent's peer ALFID; they carry data at once (zero round trips):
// Fork sends nothing, and the first message written travels in the
// clone's very first packet. A clone with nothing written for 5 ms
// announces itself with an empty MULTIPLY instead. The peer's parent connection routes packets by source ALFID;
// the first MULTIPLY that authenticates creates the peer's clone, which
// Conn.AcceptFork returns and which answers from its own ALFID; the
// forking end then addresses that. A replayed MULTIPLY of a known clone
// ALFID is ignored. Clones are independent connections once made. A
// clone closed or aborted before its first packet left announces itself
// with its RELEASE or RESET, which makes the peer's clone too.
//
// Fork credit (ours; like QUIC's MAX_STREAMS): a clone is never lost
// for want of room. Each end tells its peer, in a FORK_CREDIT extension
// (type 0x17, 4 octets) on its acknowledgements, how many clones counted
// from the start of the connection the peer may fork from it. Credit is
// granted once the application calls AcceptFork, four clones ahead of
// those that arrived and at most Config.MaxUnacceptedForks (default 64)
// ahead of those AcceptFork returned. Before hearing any, an end may fork
// four clones from a root connection, none from a clone. A Fork beyond
// the credit waits (bounded by its context) and asks for credit with an
// acknowledgement request every RTO, at most every second. A clone
// arriving beyond the credit is refused with a RESET (one arriving within
// it while the listener's memory budget is full waits: see below);
// clones still queued when their parent closes are reset, so the forking
// end's writes fail rather than vanish.
//
// Flow control and memory: a receive window starts small (about 135 KiB,
// 22 KiB for a clone) and doubles, up to Config.ReceiveWindow (4 MiB),
// whenever the reader consumed half of it within about two round trips,
// as quic-go's auto-tuning does; it never shrinks. A sender blocked by a
// closed window probes it with an acknowledgement request after an RTO,
// then at doubling intervals capped at 2 s (and at a quarter of
// IdleTimeout): answered probes are no fault, so a reader may pause as
// long as it likes, and only a silent peer is declared dead, by
// IdleTimeout. The receiver repeats the window update that reopens a
// window its peer had filled (an acknowledgement, which nothing
// acknowledges) after an RTO of at least 50 ms, doubling up to 2 s, at
// most 8 times, until data beyond the old window arrives, so one lost
// packet does not leave the sender waiting for its next probe. A listener charges every connection and clone it holds to
// its memory budget (Config.MemoryBudget, default 256 MiB; a quarter per
// peer address, half per /24 or /48): 16 KiB of fixed state and a base
// window of 4 packet buffers (1,664 bytes each) when it is made, 22.5 KiB
// in all, so the default budget holds about 11,650 idle connections,
// 2,912 from one address (more than the count bound below lets in).
// Received packets past the base window are
// charged as they arrive, in chunks of 16, the gaps before an
// out-of-order one included, and the room goes back to the base window
// once the connection has idled for a second. A packet in a jumbo
// buffer (a datagram above MaxDatagramSize) costs 9,600 bytes instead:
// the difference is charged the same way, in chunks of 4, beyond the 4
// a connection holds from its first jumbo datagram on ("Path MTU"
// above). A data packet the budget
// has no room for is dropped unacknowledged, as the network might drop
// it: the sender retransmits it, and delivery stays whole and in order.
// The base window is held all along, so every connection makes progress
// however full the budget. A clone is charged like a connection when its
// first packet arrives; without room that packet is dropped the same way
// and the peer's clone sends it again. A connection that does not fit is
// refused with a RESET during the handshake (post.ErrRefused at the
// dialer; a refusal sent once keys exist, as when the budget filled while
// the handshake ran, carries reason ResetRefused and fails the same way). The accept queue has no fixed size: what waits in it is
// charged to the budget, so a burst of dials waits for Accept instead of
// being reset after the dialer's Dial returned. So what peers make a
// listener hold never exceeds the budget. Listener.Stats reports the
// accounting, Stats.BudgetDropped the packets dropped.
//
// Connections per source: a listener also counts the connections of
// each source (an IPv4 address or an IPv6 /64), as psi/quic and psi/tcp
// do, up to Config.MaxConnsPerSource (1,024 by default). A connection
// counts from the CONNECT_REQUEST or RESTORE that starts its key
// exchange (its cookie or ticket checked) until it closes: pending,
// waiting for Accept or accepted; a resumed one like any other; under
// the address it connected from, wherever it moves afterwards. A
// source at its bound gets a RESET keyed by the request's nonce and no
// larger than the request, before any key exchange, and its dial fails
// at once with post.ErrRefused (a 0-RTT dial, which returns before the
// listener answers, fails its next read or write so, its early data
// never delivered). A handshake evicted from the pending
// table, timed out or refused gives its place back, as does a
// connection at its teardown (close, abort, idle timeout, the peer's
// RESET, a listener closed with it unaccepted). Clones do not count:
// fork credit bounds those not yet accepted and the memory budget all
// of them (as MaxStreams bounds a QUIC connection's streams); psi/tcp
// counts its forks, each a TCP connection of its own.
//
// Idle memory: a socket holds no receive buffer while it waits; its read
// loop borrows one from a pool shared by all sockets (144 KiB, 576 KiB
// while a burst lasts) and gives it back when the socket is empty. Send
// and receive windows, the read queue and the connection loop's queue a
// burst grew shrink back once they have held over four times what they
// use for a second (the loop's queue once it grew past 32 datagrams). An
// idle connection costs about 14 KB of heap with a socket of its own
// (Dial) and 11 KB on a shared Transport (docs/benchmarks.md).
//
// Traffic classes: a connection is wine-class (everything delivered, in
// order) unless it is a clone forked with Conn.ForkClass(ctx, psi.Milk)
// (psi.Transient.Fork with psi.Milk); the root connection always stays
// wine. On a milk clone, in both directions:
//
//   - Each message is one transmit transaction. A message is superseded
//     once a newer message is complete (its last packet written).
//   - Lost packets of a superseded message are not retransmitted: the
//     sender abandons that message and every older one.
//   - When the send buffer (Config.SendBuffer) overflows, the oldest
//     messages are abandoned, sent or not, to make room; the message
//     being written never is (a milk message larger than the send buffer
//     blocks the writer as on a wine connection).
//   - Every packet carries a SKIP extension with the sender's skip point,
//     the first sequence number it has not abandoned; the receiver stops
//     waiting for anything below it, dropping the incomplete message
//     (receivers only hand complete messages to the reader).
//   - Complete messages waiting for a slow reader do not close the receive
//     window: when they exceed the receive buffer the oldest unread ones
//     are dropped (never the newest, nor the one being read).
//   - Messages are delivered whole and in sending order: a reader never
//     gets an older message after a newer one, but may miss some.
//
// A milk message must fit the receive window (Config.ReceiveWindow).
// Stats.Superseded, Skipped and Evicted count what was given up.
//
// Mobility and path validation: connections are found by ALFID, so an
// authenticated packet may come from any address. The address of the
// handshake is validated (the cookie proved it). An authenticated packet
// with the highest packet number yet from a new address does not move
// the connection: the receiver sends a KEEP_ALIVE carrying a
// PATH_CHALLENGE extension (a random 64-bit nonce) there, and keeps
// sending data to the validated address. The peer echoes the nonce in a
// PATH_RESPONSE extension; its arrival, on any path, validates the
// address the challenge went to, and the connection moves there if the
// peer's newest packets come from it. Until validated, nothing but
// challenges goes to an address, at most three times the bytes received
// from it (anti-amplification), and a challenge is repeated at most once
// per RTO, each time with a fresh nonce, so the response times the
// challenge it answers (the last four are remembered). A replayed packet is dropped by the replay window; a fresh
// packet raced from a forged address costs one small challenge and moves
// nothing. Data sent to an address the peer left is lost and
// retransmitted once the new one is validated.
//
// An observer that resends the peer's packets from its own, faster
// address can get that address validated (RFC 9000 §9.3.3). As there,
// when the newest packets come from another address the active path is
// probed too, and duplicates arriving from it are authenticated: if the
// peer is still heard from the old address after the new one appeared,
// the connection stays there, or moves back at once, and the new path is
// demoted until the old one falls silent for maxProbes RTOs. Data stops
// for at most about one round trip plus one RTO.
//
// Before a peer proves itself a listener holds little: INIT_CONNECT, or
// a CONNECT_REQUEST with an expired cookie, gets a stateless cookie; a
// CONNECT_REQUEST with a valid cookie costs a key
// exchange and a signature, at most Config.MaxHandshakeRate a second per
// /24 (IPv4) or /48 (IPv6) prefix once 8 are pending, run by at most GOMAXPROCS handshake
// workers off the socket's read loop, from a queue of 1,024 shared fairly
// between prefixes (a request finding it full is dropped, and
// retransmitted, unless another prefix holds more of it: then that
// prefix's newest request goes), and one pending connection until the
// client's first protected packet, within Config.MaxPendingPerAddress,
// MaxPendingPerPrefix and MaxPending. Past a quota the oldest entry of
// the same address, prefix or (table full) largest prefix is dropped if
// older than a second, else the request is; clients retransmit, nobody
// gets a refusal for it. No reply to an unauthenticated packet is larger
// than the packet (a RESET to an unknown ALFID answers only packets of
// at least its 44 bytes, a stateless reset, below, only packets larger
// than its 60). Keys are derived only for the current key
// epoch and the next, and only a packet that authenticates moves the
// epoch; a clone is allocated only after its first packet authenticates.
//
// Multihoming: the connection keeps up to 8 paths (peer addresses), each
// with its validation state, RTT estimate (from the acknowledgements of
// data sent on it, and from challenge round trips) and counts of data
// packets sent and declared lost; Conn.Paths and the psi transient's
// Paths report them, Active on the one data is sent on: the validated
// path the peer's newest packet arrived on. A peer with several local
// addresses may send from any of them (a Transport over a PacketConn
// that spreads its writes over several sockets, or a socket whose source
// address the routing picks): the other end validates each address and
// answers on the one the newest packet came from. Paths are per
// connection (clones keep their own), identified by the peer's address;
// the local address reported is the Transport's socket's. Lost counts
// packets declared lost, spurious declarations (reordering) included.
//
// A dial on a socket of its own (Dial, Stack without a Transport) turns
// on IP_RECVERR during the handshake, so an ICMP port unreachable ends it
// at once with post.ErrRefused instead of the handshake timeout. Once
// established, such a connection reports each ICMP error naming its peer
// as a SoftError (at most once per retransmission timeout) and probes
// the peer; three port unreachables with no authenticated packet from
// the peer since the first end it with post.ErrReset (a peer process
// gone from a live host, as after a crash, is noticed after a few
// retransmissions instead of the idle timeout). A peer that answers
// starts the count over, so forged ICMP errors end nothing. A connection
// accepted by a Listener, or dialled over a shared Transport, does not
// see ICMP errors and waits for its idle timeout.
//
// Stateless reset (as QUIC's, RFC 9000 §10.3): a listener derives a reset
// key (HKDF-SHA256) from its private key (Certificates[0], or the
// PSK-derived one) and its socket's address, and the reset token of a
// connection is a truncated HMAC-SHA256 under it of the connection's
// ALFIDs and the local address the peer's packets come to (IP_PKTINFO,
// where the system says), so that listeners sharing a key and a
// wildcard socket address on several hosts do not give out each other's
// tokens (listeners sharing the address too, behind anycast or a load
// balancer, still do: give each its own key). Each end sets FlagTokenRequest (0x40) on its protected packets
// until it holds its peer's token; a listener's end answers with a
// KEEP_ALIVE flagged FlagResetToken (0x80) whose encrypted payload is
// the token, so roots and clones each get theirs, never in clear. A
// listener that no longer knows an ALFID (restarted after a crash with
// the same key on the same address, or it forgot the connection)
// answers a packet of more than 60 bytes to it with a stateless reset:
// a RESET whose payload is the token of that ALFID pair and the tag of
// the plain RESET (60 bytes), at most 64 a second to one address (an
// IPv6 /64) and 1,024 a second in all, the rest plain. The peer compares
// the token in constant time and ends the connection with
// post.ErrReset; a RESET without it is ignored (or taken as a plain
// RESET where one is believed). A connection holding a token pads its
// acknowledgement requests, and asks for one at each retransmission
// timeout, so its next packets draw the reset even when its data
// packets are small. A clone forked after the listener forgot its
// parent sends its MULTIPLY to the parent's ALFID, which draws a reset
// the clone holds no token for: that makes the parent probe the peer,
// and a parent ended by a stateless reset ends its clones that never
// heard from the peer. A listener whose private key cannot be exported
// (a hardware signer) uses a random reset key, which does not survive a
// restart. A crashed and restarted listener's dialers so fail at their
// next packet instead of at the idle timeout
// (TestRestartedListenerResets).
//
// Packets are protected with
// AES-128-GCM, the header being the associated data and the nonce a
// per-direction IV XOR the 64-bit packet number; the key changes every
// 2^20 packets (epoch keys derived from the traffic secret), as the notes
// require. A sliding 1024-packet replay window drops replayed packets;
// packets failing authentication are dropped silently. Conn.InstallKey
// mixes a secret agreed by the upper layer into the master secret; the
// key phase flag tells the receiver which generation protects a packet.
//
// Reliability: the receiver acknowledges cumulatively in every packet
// and, in KEEP_ALIVE packets, with a SELECTIVE_NACK header listing the
// gaps; a packet out of order is acknowledged at once. The sender
// declares a packet lost when three later ones were acknowledged or after
// 9/8 RTT (fast retransmit). When no acknowledgement comes within a probe
// timeout (RFC 9002 §6.2: smoothed RTT + max(4·RTT variance, 1 ms) + the
// peer's 1 ms maximum acknowledgement delay, doubled per probe) it sends
// tail-loss probes, the newest and oldest data in flight again, beyond
// the congestion window: a lone lost last packet costs about two round
// trips. After two probe timeouts the RTO (the same formula, floored at
// 2 ms and doubled per expiry) presumes all in flight lost and resends
// under a collapsed window. Either expiry, if datagrams for the
// connection wait unread (in its socket or its loop's queue), is put off
// once by a quarter of the timeout, at most 10 ms: on a busy host they
// are often the acknowledgements. Congestion control is CUBIC (or NewReno)
// with pacing; a loss while the flow has fewer than three packets queued
// on the path (by the least RTT of the round trip) is taken for a random
// one and keeps 0.85 of the window instead of 0.7 (as TCP Veno). The connections of a session (the root and its clones)
// share one controller and pacer per peer address, so eight busy clones
// take one flow's share of a bottleneck, and share loss detection: the
// last packet of a burst asks for an immediate acknowledgement, and is
// lost once a sibling's packet sent a reordering window (a quarter of the
// minimum RTT, at least 100 µs, and twice the RTT variation up to the
// RTT) after it is acknowledged (RACK). A clone's timeout while
// its siblings are acknowledged reduces the shared window as a loss does
// instead of collapsing it. Each keeps its own sequence space and
// retransmissions; one that ends (closed or aborted) takes its packets
// in flight off the shared window for good. The receive window is advertised in packets. Keep-alives
// tick every Config.KeepAlive (a third of IdleTimeout, at least 500 ms)
// while idle and ask for an acknowledgement once the peer has been silent
// for half that; a peer silent for IdleTimeout, or one that leaves ten
// backed-off retransmission timeouts and at least 5 s of data
// unanswered, is declared dead with post.ErrTimeout. The idle timeout
// counts the peer's silence, not a starved host's: it is put off by the
// time the connection's timer fired late and while datagrams wait
// unread for it, at most to twice IdleTimeout. A peer that released
// the connection and acknowledged everything sent to it is never, nor probed: what it
// sent stays readable until Close, though it has exited, and a waiting
// AcceptFork fails with post.ErrClosed once no clone is queued.
//
// Close flushes, sends RELEASE and waits for the cumulative
// acknowledgement of everything up to it (the peer then reads io.EOF),
// at most Config.Linger (3 s) or until the context of CloseContext ends;
// against a live peer that reads, about a round trip. It returns nil only
// if everything was acknowledged; otherwise it aborts the connection with
// a RESET and returns an error wrapping post.ErrTimeout, so Close against
// a vanished peer returns that error after the linger. A connection
// whose peer released first only waits for the acknowledgement of its
// own data, after acknowledging the peer's RELEASE. From Close on, what
// was received unread and what arrives is discarded, so the window stays
// open for a peer closing at the same time (until 2 December it stayed
// shut, and two ends closing at once with unread data both waited out
// their linger). After Close the
// connection stays known for a short time-wait (4 RTOs, 200 ms to 1 s),
// acknowledging and discarding what the peer still sends, so a peer that
// sent as we closed completes its own Close in about a round trip too.
// Abort sends a RESET
// and frees the connection at once; the peer's calls fail with
// post.ErrReset, a Close waiting on our RELEASE included (until 2
// December a RESET that crossed it was dropped, as long as an
// unauthenticated one, and that Close waited out its linger).
//
// # Engine
//
// A Transport's socket has one reader goroutine. It only parses the clear
// header: handshake requests go to the listener (and its handshake
// workers), every other datagram goes to its connection's queue by
// destination ALFID, once per read batch, without a copy: the queue keeps
// it in the socket's receive space, which goes back to its pool when the
// loops have processed all it holds (sockio.Hold; a connection keeps at
// most 512 such datagrams and a socket 16 spaces, past which the reader
// copies). Each connection has its own
// loop (conn_loop.go), a goroutine started by the first datagram or timer
// expiry and gone when the queue is empty, so an idle connection holds
// none. The loop decrypts (out of the receive space into a buffer of its
// own, or in place, with the connection's lock released),
// processes acknowledgements and loss detection, runs the connection's
// timer, and sends what that released. The queue holds at most the
// maximum receive window plus a batch; when it is full the reader waits
// up to 2 ms for room, then drops (Stats.QueueDropped). All of a
// Transport's queues together hold at most 64 MiB (or one full queue, if
// more), and those of one peer address a quarter of that; past that the
// reader drops at once. Writers still send
// from their own goroutine, but packets are built under the lock and
// sealed after it is dropped, so no connection lock is held across AES-GCM
// or a system call on the data path, and the connections of one socket
// send at once (sockio.Conn.WriteBatch takes no lock). While packets are
// in flight, a writer waits once 128 of its packets wait to be sent (as
// many bytes, about 20 packets, at the jumbo size; acknowledgements and
// sends wake it) instead of packetizing its whole
// send buffer ahead of the sender, which data would then be sealed from
// long after it left the cache; with nothing in flight it fills the send
// buffer (conn_unsent.go). A listener's
// socket buffer grows from 4 to 16 MiB while the socket overflows with
// its connections' data, and shrinks back when handshakes are more than
// a sixteenth of what it reads (rcvbuf.go).
//
// # Tracing
//
// With Config.TraceDir (psi.Config.TraceDir) or the POSTSOCKETS_QLOGDIR
// environment variable set, every established connection writes a qlog
// trace (JSON-SEQ) named fsp_<client|server>_<ALFID>.sqlog: packets sent,
// received and lost, acknowledgements, RTT, congestion window, pacing
// rate, congestion state, path validation and migration, path MTU
// changes and key updates,
// as events fsp:packet_sent, fsp:packet_received, fsp:packets_acked,
// fsp:packet_lost, fsp:retransmission_timeout, fsp:metrics_updated,
// fsp:congestion_state_updated, fsp:path_validated, fsp:path_migrated,
// fsp:mtu_updated, fsp:key_updated, fsp:connection_started and
// fsp:connection_closed.
// docs/tracing.md gives their fields; cmd/fsptrace charts a trace. With
// tracing off each hook costs a nil check.
//
// # Deviations from the reference implementation
//
//   - The wire format is not compatible: the signature (version, opcode,
//     header stack pointer) comes first so the first octet is zero, a
//     separate 32-bit packet number drives nonces and replay protection
//     (sequence numbers count data packets, retransmissions keep theirs),
//     and both ALFIDs are in every header.
//   - Extension headers are type-length-value records, skipped if unknown.
//   - The handshake authenticates with certificates or a PSK rather than
//     the reference's CHAKA exchange, which can run above InstallKey.
//   - The handshake packets with a certificate chain (ACK_CONNECT_REQ,
//     CLIENT_AUTH) are fragmented by FSP into datagrams of at most
//     BaseDatagramSize.
//   - Path MTU discovery, its padded probes and the FRAGMENT extension
//     are ours.
//   - ADJOURN, ACK_FLUSH and PERSIST-with-SNACK are not implemented;
//     acknowledgements travel in KEEP_ALIVE packets. RESTORE resumes a
//     session from a ticket the listener sealed (NEW_TICKET is ours),
//     not a closed connection the listener remembers.
//   - The ABORT flag (one message abandoned, the connection going on) is
//     ours.
//   - Milk-class clones and the SKIP extension are ours; the reference
//     implementation has no traffic classes.
//   - Fork credit (FORK_CREDIT) is ours; the reference has no limit on
//     clones but its socket table.
//   - Initial sequence numbers are 1, not random: packets are encrypted.
//   - Reset tokens and stateless resets are ours (after QUIC's).
//   - Unauthenticated RESETs are believed only while connecting, when
//     tagged under the initiator's nonce (RefusalKey: only a party that
//     saw the INIT_CONNECT or CONNECT_REQUEST can refuse a dial; others
//     are ignored until the handshake times out); tagged under its own
//     ALFID, after the dialer has the listener's answer but before any
//     protected packet of the listener's confirmed it (the listener gave
//     the handshake up, or refused a CLIENT_AUTH, and forgot it: the
//     connection fails at once rather than at its idle timeout); and, as
//     a last word, while closing with everything acknowledged. A
//     stateless reset carrying the connection's reset token is believed
//     at any time.
package fsp
