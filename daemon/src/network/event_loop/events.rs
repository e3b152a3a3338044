//! The event loop's handling of swarm events: connections and listeners, Kademlia queries and
//! inbound DHT records, gossip (charged to the sender's budget before the registry sees it),
//! Identify's addresses, and the sync and fetch exchanges.

use super::*;

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.record(&event);
        match event {
            SwarmEvent::Behaviour(b) => self.on_behaviour(b),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                debug!(%address, "listening");
                if let Some((_, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                self.relay_listener_closed(listener_id);
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(NetworkError::Listen {
                        addr: addr.to_string(),
                        reason,
                    }));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(?listener_id, %error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, num_established.get(), &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.remotes.remove(&connection_id);
                if let Some(open) = self.connections.get_mut(&peer_id) {
                    open.retain(|c| *c != connection_id);
                    if open.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                debug!(peer = %peer_id, ?cause, "connection closed");
                if num_established == 0 {
                    self.metrics
                        .peers
                        .set(self.swarm.connected_peers().count() as i64);
                    self.gossip_budget.forget(&peer_id);
                    self.offer(NetworkEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, %error, "outgoing connection failed");
                if let Some((addr, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Err(NetworkError::Dial {
                        addr: addr.to_string(),
                        reason: dial_reason(&error),
                    }));
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.external_confirmed(&address);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                info!(%address, "external address expired");
                self.choose_dht_role();
            }
            other => trace!(event = ?other, "unhandled swarm event"),
        }
    }

    /// Counts the event, and gives libp2p's own metrics their share of it.
    fn record(&self, event: &SwarmEvent<BehaviourEvent>) {
        self.metrics.swarm_events.inc();
        let m = &self.metrics.libp2p;
        m.record(event);
        if let SwarmEvent::Behaviour(b) = event {
            match b {
                BehaviourEvent::Kad(e) => m.record(e),
                BehaviourEvent::Gossipsub(e) => m.record(e),
                BehaviourEvent::Identify(e) => m.record(e),
                BehaviourEvent::Ping(e) => m.record(e),
                // What a relay grants and refuses, and how hole punches end, for operators.
                BehaviourEvent::Relay(e) => m.record(e),
                BehaviourEvent::Dcutr(e) => m.record(e),
                _ => {}
            }
        }
    }

    /// Counts peers' chunk requests open for [`QUEUED`] or longer, for the handle.
    fn count_queued_uploads(&self) {
        let queued = self
            .fetch
            .open
            .older_than(QUEUED, std::time::Instant::now());
        self.uploads
            .store(queued, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Kad(e) => self.on_kad(e),
            BehaviourEvent::Gossipsub(e) => self.on_gossip(e),
            BehaviourEvent::Identify(e) => self.on_identify(e),
            BehaviourEvent::Sync(e) => {
                on_exchange(
                    &mut self.swarm.behaviour_mut().sync,
                    &mut self.sync,
                    &self.events,
                    e,
                    |peer, id, request| NetworkEvent::SyncRequest { peer, id, request },
                    SyncResponse::Refused(Refusal::Busy),
                );
            }
            BehaviourEvent::Fetch(e) => {
                let ended = on_exchange(
                    &mut self.swarm.behaviour_mut().fetch,
                    &mut self.fetch,
                    &self.events,
                    e,
                    |peer, id, request| NetworkEvent::FetchRequest { peer, id, request },
                    FetchResponse::Refused(Refusal::Busy),
                );
                if let Some(id) = ended {
                    self.upload_ended(id);
                }
                self.count_queued_uploads();
            }
            BehaviourEvent::Have(e) => {
                // Counted first: the answer to a have request depends on it.
                self.count_queued_uploads();
                on_exchange(
                    &mut self.swarm.behaviour_mut().have,
                    &mut self.have,
                    &self.events,
                    e,
                    |peer, id, request| NetworkEvent::HaveRequest { peer, id, request },
                    HaveResponse::Refused(Refusal::Busy),
                );
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.offer(NetworkEvent::PingRtt { peer, rtt });
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(%peer, %addr, "mDNS discovered a peer");
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::RelayClient(e) => self.on_relay_client(e),
            BehaviourEvent::Dcutr(e) => self.on_dcutr(e),
            BehaviourEvent::Autonat(e) => self.on_autonat(e),
            BehaviourEvent::Relay(e) => debug!(event = ?e, "relay"),
            other => trace!(event = ?other, "unhandled behaviour event"),
        }
    }

    fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        num_established: u32,
        endpoint: &libp2p::core::ConnectedPoint,
    ) {
        debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
        self.remotes.insert(connection_id, endpoint.clone());
        self.connections
            .entry(peer_id)
            .or_default()
            .push(connection_id);
        self.prefer_direct(peer_id, connection_id);
        if let Some((_, reply)) = self.pending_dial.remove(&connection_id) {
            // A dialled address is reachable: remember it for Kademlia too.
            if endpoint.is_dialer() {
                let addr = endpoint.get_remote_address().clone();
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
            let _ = reply.send(Ok(peer_id));
        }
        if num_established == 1 {
            self.metrics
                .peers
                .set(self.swarm.connected_peers().count() as i64);
            self.offer(NetworkEvent::PeerConnected { peer: peer_id });
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received {
                peer_id,
                info,
                connection_id,
            } => {
                self.consider_relay(peer_id, connection_id, &info);
                let kad_protocol = StreamProtocol::new(KAD_PROTOCOL);
                if !info.protocols.contains(&kad_protocol) {
                    // A server behind a NAT turns client once it knows (`nat.rs`), and says so
                    // by identify: lookups must stop going to it through a relay.
                    trace!(peer = %peer_id, "peer does not serve Agora's Kademlia");
                    self.swarm.behaviour_mut().kad.remove_peer(&peer_id);
                    return;
                }
                let Some(remote) = self
                    .remotes
                    .get(&connection_id)
                    .map(|e| e.get_remote_address())
                else {
                    return;
                };
                let reached = Reach::of(remote);
                for addr in info.listen_addrs {
                    if is_dialable(&addr) && Reach::of(&addr) >= reached {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            other => trace!(event = ?other, "identify event"),
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                if !self
                    .gossip_budget
                    .take(propagation_source, std::time::Instant::now())
                {
                    self.metrics.gossip_over_budget.inc();
                    // A relay over budget may be passing on a burst from elsewhere; a peer
                    // over it with its own messages is flooding.
                    let verdict = if message.source == Some(propagation_source) {
                        MessageAcceptance::Reject
                    } else {
                        MessageAcceptance::Ignore
                    };
                    self.judge_gossip(&message_id, &propagation_source, verdict);
                    return;
                }
                let event = NetworkEvent::Gossip {
                    source: propagation_source,
                    id: message_id.clone(),
                    data: message.data,
                };
                if !self.offer(event) {
                    warn!(source = %propagation_source, "registry is behind: ignoring a gossip message");
                    self.judge_gossip(&message_id, &propagation_source, MessageAcceptance::Ignore);
                }
            }
            other => trace!(event = ?other, "gossipsub event"),
        }
    }

    /// Tells gossipsub what became of a message the registry will not see.
    pub(super) fn judge_gossip(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        verdict: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => {
                if step.last {
                    let (kind, ok) = query_outcome(&result);
                    if let Some(took) = stats.duration() {
                        self.metrics.observe_query(kind, ok, took);
                    }
                    if let Some(span) = self.query_spans.remove(&id) {
                        span.record("outcome", if ok { "ok" } else { "error" });
                        span.record("records", stats.num_successes());
                    }
                }
                self.on_query(id, result, step.last)
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                self.metrics.dht_records_received.inc();
                if record.value.len() > MAX_DHT_VALUE_BYTES {
                    debug!(%source, len = record.value.len(), "dropping an oversized DHT record");
                    return;
                }
                // A copy of what we store (each replication round brings one of every record
                // from each peer that holds it) changes nothing: no decoding, no signature
                // check, no trip to the registry.
                let store = self.swarm.behaviour_mut().kad.store_mut();
                if store.value(record.key.as_ref()) == Some(&record.value[..]) {
                    self.metrics.dht_records_unchanged.inc();
                    return;
                }
                if !self.offer(NetworkEvent::InboundRecord { source, record }) {
                    warn!(%source, "registry is behind: dropping an inbound DHT record");
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => {
                // Kademlia has already checked that the provider is the peer that sent it;
                // the store bounds providers per key and in total. Agora provides archives
                // only: any other key is someone filling the store.
                if !matches!(DhtKey::parse(record.key.as_ref()), Ok(DhtKey::Content(_))) {
                    debug!(provider = %record.provider, "dropping a provider record for a key that names no archive");
                    return;
                }
                if let Err(e) = kad::store::RecordStore::add_provider(
                    self.swarm.behaviour_mut().kad.store_mut(),
                    record,
                ) {
                    debug!(error = ?e, "provider record not stored");
                }
            }
            other => trace!(event = ?other, "kademlia event"),
        }
    }

    /// Ends a collecting query whose grace period is over, answering with what it has: the
    /// rest of a query can wait on unreachable peers until its timeout, which no caller with
    /// an answer in hand should.
    pub(super) fn grace_over(&mut self, id: QueryId) {
        if let Some(p) = self.pending_get.remove(&id) {
            let _ = p.reply.send(p.lookup.answer());
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                debug!(?id, "query answered after its grace period; finishing it");
                q.finish();
            }
        }
    }

    /// Ends a provider search: its channel closes, and its query stops if it still runs.
    pub(super) fn end_provider_search(&mut self, id: QueryId) {
        if self.pending_providers.remove(&id).is_some()
            && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
        {
            q.finish();
        }
    }

    /// Answers a query that has one result (bootstrap, put, start providing).
    fn resolve_query<E: std::fmt::Display>(&mut self, id: QueryId, result: Result<(), E>) {
        if let Some(reply) = self.pending_query.remove(&id) {
            let _ = reply.send(result.map_err(|e| NetworkError::Query(e.to_string())));
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            // A bootstrap reports one step per bucket refreshed; answer on the last (or an error).
            QueryResult::Bootstrap(Ok(_)) if !last => {}
            QueryResult::Bootstrap(r) => self.resolve_query(id, r.map(drop)),
            QueryResult::PutRecord(r) => self.resolve_query(id, r.map(drop)),
            QueryResult::StartProviding(r) => self.resolve_query(id, r.map(drop)),
            QueryResult::GetRecord(r) => {
                let Some(pending) = self.pending_get.get_mut(&id) else {
                    return;
                };
                let mut done = last;
                match r {
                    Ok(GetRecordOk::FoundRecord(peer_record)) => {
                        let record = peer_record.record;
                        match dht::validate(record.key.as_ref(), &record.value) {
                            Ok(_) => {
                                let taken = pending.lookup.take(record.value);
                                if taken.start_grace {
                                    self.graces.push(grace(self.query_grace, id));
                                }
                                if taken.enough {
                                    if let Some(mut q) =
                                        self.swarm.behaviour_mut().kad.query_mut(&id)
                                    {
                                        q.finish();
                                    }
                                    done = true;
                                }
                            }
                            Err(e) => {
                                debug!(peer = ?peer_record.peer, error = %e, "invalid DHT record ignored")
                            }
                        }
                    }
                    Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => done = true,
                    Err(e) => {
                        debug!(error = %e, "get_record ended");
                        done = true;
                    }
                }
                if done && let Some(p) = self.pending_get.remove(&id) {
                    let _ = p.reply.send(p.lookup.answer());
                }
            }
            QueryResult::GetProviders(r) => {
                let Some(search) = self.pending_providers.get_mut(&id) else {
                    return;
                };
                let mut done = last;
                match r {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                        for peer in providers {
                            // The channel holds `MAX_PROVIDERS_PER_GET`: it is never full, so
                            // a failure means the searcher has gone.
                            if search.sent.admit(peer) && search.to.try_send(peer).is_err() {
                                done = true;
                                break;
                            }
                        }
                        done |= search.sent.full();
                    }
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => done = true,
                    Err(e) => {
                        debug!(error = %e, "get_providers ended");
                        done = true;
                    }
                }
                if done {
                    self.end_provider_search(id);
                }
            }
            other => trace!(?id, result = ?other, "query we did not start"),
        }
    }
}

/// Why a dial failed, in one line: libp2p's error lists every address tried with the chain
/// of causes of each, and what a user can act on is the innermost cause of the first (the
/// connection refused, the peer id that answered).
pub(super) fn dial_reason(error: &libp2p::swarm::DialError) -> String {
    use libp2p::swarm::DialError;
    let innermost = |e: &dyn std::error::Error| {
        let mut e = e;
        while let Some(source) = e.source() {
            e = source;
        }
        e.to_string()
    };
    match error {
        DialError::Transport(tried) => match tried.first() {
            Some((_, e)) => innermost(e),
            None => "no address to dial".into(),
        },
        DialError::WrongPeerId { obtained, .. } => {
            format!("the peer at that address is {obtained}, not the one asked for")
        }
        other => innermost(other),
    }
}

/// The kind of a query and whether its final step succeeded.
fn query_outcome(result: &QueryResult) -> (&'static str, bool) {
    match result {
        QueryResult::Bootstrap(r) => ("bootstrap", r.is_ok()),
        QueryResult::GetRecord(r) => ("get_record", r.is_ok()),
        QueryResult::PutRecord(r) => ("put_record", r.is_ok()),
        QueryResult::GetProviders(r) => ("get_providers", r.is_ok()),
        QueryResult::StartProviding(r) => ("start_providing", r.is_ok()),
        QueryResult::RepublishProvider(r) => ("republish_provider", r.is_ok()),
        QueryResult::RepublishRecord(r) => ("republish_record", r.is_ok()),
        QueryResult::GetClosestPeers(r) => ("get_closest_peers", r.is_ok()),
    }
}

/// Offers an event to the registry without waiting; false if the channel is full.
pub(super) fn offer(events: &mpsc::Sender<NetworkEvent>, event: NetworkEvent) -> bool {
    match events.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => false,
        // Nobody listens (the registry has stopped): treat as handled.
        Err(TrySendError::Closed(_)) => true,
    }
}

/// Handles an event of the sync or fetch protocol: inbound requests go to the registry, or get
/// `busy` at once when the peer or all peers together have as many open as the budget allows
/// or the registry is behind; responses and failures resolve our requests. Returns the peer's
/// request whose exchange this event ended (its response written, or it failed).
fn on_exchange<Req, Resp>(
    behaviour: &mut request_response::Behaviour<WireCodec<Req, Resp>>,
    state: &mut Exchanges<Resp>,
    events: &mpsc::Sender<NetworkEvent>,
    event: request_response::Event<Req, Resp>,
    to_event: fn(PeerId, InboundRequestId, Req) -> NetworkEvent,
    busy: Resp,
) -> Option<InboundRequestId>
where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request_id,
                request,
                channel,
            } => {
                if !state.open.open(peer, request_id, std::time::Instant::now()) {
                    let _ = behaviour.send_response(channel, busy);
                    return None;
                }
                state.inbound.insert(request_id, channel);
                if !offer(events, to_event(peer, request_id, request))
                    && let Some(channel) = state.inbound.remove(&request_id)
                {
                    let _ = behaviour.send_response(channel, busy);
                }
            }
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = state.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
        },
        request_response::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(reply) = state.pending.remove(&request_id) {
                let error = match error {
                    request_response::OutboundFailure::UnsupportedProtocols => {
                        NetworkError::Unsupported { peer }
                    }
                    other => NetworkError::Request {
                        peer,
                        reason: other.to_string(),
                    },
                };
                let _ = reply.send(Err(error));
            }
        }
        request_response::Event::InboundFailure { request_id, .. }
        | request_response::Event::ResponseSent { request_id, .. } => {
            state.inbound.remove(&request_id);
            state.open.close(request_id);
            return Some(request_id);
        }
    }
    None
}

/// How far an address can be reached from: this machine, its private networks, anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reach {
    Loopback,
    Private,
    Public,
}

impl Reach {
    pub(super) fn of(addr: &Multiaddr) -> Self {
        match addr.iter().next() {
            Some(Protocol::Ip4(ip)) if ip.is_loopback() => Self::Loopback,
            Some(Protocol::Ip6(ip)) if ip.is_loopback() => Self::Loopback,
            // 100.64.0.0/10 is carrier-grade NAT: shared, not reachable from outside.
            Some(Protocol::Ip4(ip))
                if ip.is_private()
                    || ip.is_link_local()
                    || (ip.octets()[0] == 100 && ip.octets()[1] & 0xC0 == 64) =>
            {
                Self::Private
            }
            Some(Protocol::Ip6(ip)) if ip.is_unique_local() || ip.is_unicast_link_local() => {
                Self::Private
            }
            _ => Self::Public,
        }
    }
}

/// Addresses worth putting in the routing table: not unspecified (0.0.0.0 / ::).
fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer reached over the internet lists its LAN and loopback addresses too: handed to
    /// Kademlia they would be passed to peers that can reach none of them (and dialled there,
    /// into whatever holds those addresses on their own networks). An address is kept only if
    /// it reaches at least as far as the connection the peer was heard on.
    #[test]
    fn a_peer_reached_from_afar_has_only_its_far_reaching_addresses_kept() {
        let reach = |a: &str| Reach::of(&a.parse().unwrap());
        assert_eq!(reach("/ip4/127.0.0.1/tcp/1"), Reach::Loopback);
        assert_eq!(reach("/ip6/::1/tcp/1"), Reach::Loopback);
        assert_eq!(reach("/ip4/192.168.1.5/tcp/1"), Reach::Private);
        assert_eq!(reach("/ip4/10.0.0.5/udp/1/quic-v1"), Reach::Private);
        assert_eq!(reach("/ip4/100.64.0.1/tcp/1"), Reach::Private);
        assert_eq!(reach("/ip6/fd00::1/tcp/1"), Reach::Private);
        assert_eq!(reach("/ip4/203.0.113.9/tcp/1"), Reach::Public);
        assert_eq!(reach("/dns4/seed.example/tcp/1"), Reach::Public);
        let kept = |remote: &str, listed: &str| reach(listed) >= reach(remote);
        assert!(!kept("/ip4/203.0.113.9/tcp/1", "/ip4/192.168.1.5/tcp/1"));
        assert!(!kept("/ip4/203.0.113.9/tcp/1", "/ip4/127.0.0.1/tcp/1"));
        assert!(kept("/ip4/203.0.113.9/tcp/1", "/ip4/198.51.100.2/tcp/1"));
        assert!(kept("/ip4/192.168.1.5/tcp/1", "/ip4/192.168.1.6/tcp/1"));
        assert!(!kept("/ip4/192.168.1.5/tcp/1", "/ip4/127.0.0.1/tcp/1"));
        assert!(kept("/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"));
    }
}
