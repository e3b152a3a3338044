//! The network lab: real `agorad` processes on emulated networks, each node a host of its own
//! (a network namespace: its own address and stack), on LANs, behind NAT routers, on shaped
//! links. The tests (`tests/lab/`), the benches (`benches/lab.rs`) and the `agora-lab`
//! command build their topologies with it.
//!
//! - [`net`]: the topology (networks, hosts, NAT routers, link rates), torn down on drop.
//! - [`node`]: an agorad on a host, driven from outside through its socket.
//! - [`userns`]: the same without root, in a user namespace of its own.

pub mod net;
pub mod node;
pub mod userns;

pub use net::{BehindNats, Host, Lab, Nat, Network, inside, qdiscs};
pub use node::{Node, metric};
pub use userns::enter;
