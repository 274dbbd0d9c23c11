//! mcpd library.
