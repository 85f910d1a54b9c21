// Package post is the shared vocabulary of Post Sockets: messages and their
// properties, the Local and Remote ends of an Association, Paths between
// them, send events and typed errors. It performs no I/O.
package post
