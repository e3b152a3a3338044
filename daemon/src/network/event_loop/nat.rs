//! Crossing NATs: whether this node is reachable (AutoNAT v2, and addresses the swarm has
//! confirmed), slots on relays while it is not, and direct connections replacing relayed ones
//! once DCUtR has punched a hole.
//!
//! A relay is a peer this node reached by dialing a public address the peer itself lists, and
//! which speaks the relay hop protocol: a peer that only dialed us, or that we reached at its
//! router's address through a punched hole, is itself behind a NAT (libp2p's relay server
//! advertises the hop protocol as soon as its node has a relayed address of its own). The relayed address a
//! reservation yields is confirmed as external by the relay client, so provider records and
//! Identify hand it to peers. A relayed connection is closed once a direct one to the same
//! peer is up, so that requests (which libp2p spreads over a peer's connections) go direct.

use libp2p::kad::store::RecordStore;
use libp2p::{autonat, dcutr, kad, relay};

use super::events::Reach;
use super::*;
use crate::network::is_relayed;

/// Most relays a node behind a NAT holds slots on at once.
const MAX_RESERVATIONS: usize = 2;
/// Most provider records announced again when the node gains an address peers can reach it
/// by (the rest wait for Kademlia's own republication).
const MAX_REPROVIDE: usize = 1024;

/// Whether peers can dial this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Nothing tested yet.
    #[default]
    Unknown,
    /// An address of this node was dialed back by a peer (or confirmed otherwise).
    Public,
    /// Peers tried to dial this node's addresses back and could not: it is behind a NAT or a
    /// firewall, reachable only through its relays.
    Private,
}

impl Reachability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// What the event loop knows about crossing NATs.
#[derive(Default)]
pub(super) struct Nat {
    pub reachability: Reachability,
    /// The listener of each relay this node holds (or asked for) a slot on.
    reservations: HashMap<PeerId, ListenerId>,
}

impl Nat {
    /// Where the operator declared the node's addresses (a public server), it is reachable
    /// from the start.
    pub fn declared(swarm: &Swarm<Behaviour>) -> Self {
        let public = swarm.external_addresses().any(|a| !is_relayed(a));
        Self {
            reachability: if public {
                Reachability::Public
            } else {
                Reachability::Unknown
            },
            reservations: HashMap::new(),
        }
    }
}

fn relayed_endpoint(endpoint: &libp2p::core::ConnectedPoint) -> bool {
    is_relayed(endpoint.get_remote_address())
}

impl EventLoop {
    /// A peer identified itself on `connection`: if this node may need a relay and the peer
    /// can be one, reserve a slot on it.
    pub(super) fn consider_relay(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        info: &identify::Info,
    ) {
        let nat = &self.nat;
        if nat.reachability == Reachability::Public
            || nat.reservations.len() >= MAX_RESERVATIONS
            || nat.reservations.contains_key(&peer)
            || !info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
        {
            return;
        }
        let Some(addr) = self
            .remotes
            .get(&connection)
            .filter(|e| e.is_dialer())
            .map(|e| e.get_remote_address())
        else {
            return;
        };
        if Reach::of(addr) != Reach::Public || is_relayed(addr) {
            return;
        }
        let mut circuit: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let listed = info.listen_addrs.iter().any(|l| {
            let l: Multiaddr = l
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect();
            l == circuit
        });
        if !listed {
            return;
        }
        circuit.push(Protocol::P2p(peer));
        circuit.push(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                info!(relay = %peer, address = %circuit, "asking a relay for a slot");
                self.nat.reservations.insert(peer, id);
            }
            Err(e) => debug!(relay = %peer, error = %e, "cannot listen through the relay"),
        }
    }

    /// A listener closed: if it was a relay's, the slot is gone (another relay may take its
    /// place when one identifies).
    pub(super) fn relay_listener_closed(&mut self, listener: ListenerId) {
        self.nat.reservations.retain(|relay, id| {
            let gone = *id == listener;
            if gone {
                info!(%relay, "the slot on a relay closed");
            }
            !gone
        });
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    info!(relay = %relay_peer_id, "a relay holds a slot for this node");
                }
            }
            other => debug!(event = ?other, "relay client"),
        }
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                info!(peer = %event.remote_peer_id, ?connection, "hole punched: a direct connection replaces the relayed one");
            }
            Err(error) => {
                info!(peer = %event.remote_peer_id, %error, "no hole could be punched: the connection stays relayed");
            }
        }
    }

    pub(super) fn on_autonat(&mut self, event: autonat::v2::client::Event) {
        match event.result {
            Ok(()) => {
                debug!(address = %event.tested_addr, server = %event.server, "dialed back: reachable");
                self.reachable();
            }
            Err(error) => {
                debug!(address = %event.tested_addr, server = %event.server, %error, "not dialed back");
                if self.nat.reachability == Reachability::Unknown {
                    info!("peers cannot dial this node: it is reachable through relays only");
                    self.nat.reachability = Reachability::Private;
                    self.choose_dht_role();
                }
            }
        }
    }

    /// The swarm confirmed an external address of this node: a relayed one means nothing
    /// about reachability, any other one means peers can dial us.
    ///
    /// Either way, what this node provides is announced again, now with the address: a
    /// provider record put before carries the addresses the node had then (none, behind a NAT
    /// before its relay answered), which no fetcher could dial.
    pub(super) fn external_confirmed(&mut self, address: &Multiaddr) {
        match is_relayed(address) {
            false => self.reachable(),
            true => self.choose_dht_role(),
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        let keys: Vec<kad::RecordKey> = kad
            .store_mut()
            .provided()
            .take(MAX_REPROVIDE)
            .map(|r| r.key.clone())
            .collect();
        debug!(
            records = keys.len(),
            "announcing what this node provides again"
        );
        for key in keys {
            if let Err(e) = kad.start_providing(key) {
                debug!(error = %e, "cannot announce a provider record again");
            }
        }
    }

    /// A DHT server that peers reach only through relays costs a circuit per lookup, and
    /// stays in routing tables after it is gone, where every lookup dials it through a relay
    /// in vain: a node that is private and known only by relayed addresses is a client (it
    /// still looks up, puts and announces what it provides). Any other node serves: a failed
    /// dial-back alone (on a LAN or loopback, to a port it does not listen on) says nothing
    /// about whether its peers reach it.
    pub(super) fn choose_dht_role(&mut self) {
        let relayed_only = {
            let mut external = self.swarm.external_addresses().peekable();
            external.peek().is_some() && external.all(is_relayed)
        };
        let mode = match self.nat.reachability == Reachability::Private && relayed_only {
            true => kad::Mode::Client,
            false => kad::Mode::Server,
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.mode() != mode {
            info!(?mode, "DHT role");
            kad.set_mode(Some(mode));
        }
    }

    /// Peers can dial this node: it needs no relay any more.
    fn reachable(&mut self) {
        if self.nat.reachability == Reachability::Public {
            return;
        }
        info!("peers can dial this node: it is publicly reachable");
        self.nat.reachability = Reachability::Public;
        self.choose_dht_role();
        for (relay, listener) in self.nat.reservations.drain() {
            debug!(%relay, "giving up the slot on a relay");
            self.swarm.remove_listener(listener);
        }
    }

    /// A connection came up: a direct one replaces the peer's relayed ones, and a relayed one
    /// to a peer already connected directly is not needed.
    pub(super) fn prefer_direct(&mut self, peer: PeerId, connection: ConnectionId) {
        let Some(new_is_relayed) = self.remotes.get(&connection).map(relayed_endpoint) else {
            return;
        };
        let others: Vec<(ConnectionId, bool)> = self
            .connections
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|c| **c != connection)
            .filter_map(|c| self.remotes.get(c).map(|e| (*c, relayed_endpoint(e))))
            .collect();
        if new_is_relayed {
            if others.iter().any(|(_, relayed)| !relayed) {
                debug!(%peer, "closing a relayed connection: a direct one is up");
                self.swarm.close_connection(connection);
            }
            return;
        }
        for (other, relayed) in others {
            if relayed {
                debug!(%peer, "closing a relayed connection: a direct one is up");
                self.swarm.close_connection(other);
            }
        }
    }
}
