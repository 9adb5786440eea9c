//! The harness of the reverse proxy tests, over real TCP on loopback: an
//! [`Origin`](origin::Origin) whose answers a test sets, the proxy of
//! `examples/reverse_proxy.rs` in front of it ([`Proxy`](proxy::Proxy))
//! and a client ([`client`]).

pub mod client;
pub mod origin;
pub mod proxy;

/// The example itself, so that the tests run the very proxy users start.
#[path = "../../examples/reverse_proxy.rs"]
#[allow(
    dead_code,
    reason = "`main` and its environment handling are the example's own"
)]
pub mod reverse_proxy;

use std::time::Duration;

/// How long a test waits for an answer before it fails: generous, so that
/// a loaded machine never fails a test by being slow, only by the answer
/// not coming.
pub const PATIENCE: Duration = Duration::from_secs(30);
