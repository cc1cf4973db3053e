//! Peer-side punching machinery. So far: [`ReflexiveKeeper`], which learns the peer's public (server-reflexive)
//! endpoint from a STUN server over the one punching socket, keeps the NAT mapping alive with periodic Binding
//! requests, and reports when the endpoint changes (the trigger for a re-punch).

mod reflexive;

pub use reflexive::{Event, KeeperConfig, ReflexiveKeeper};
