//! The event loop's answers to commands from `NetworkHandle`s: each starts swarm work and
//! keeps its reply until the work ends, or answers at once.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command, span: &Span) {
        self.metrics.commands.inc();
        match command {
            Command::Listen { addr, reply } => self.listen(addr, reply),
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::AddAddress { peer, addr, reply } => {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                let _ = reply.send(Ok(()));
            }
            Command::Bootstrap { reply } => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => self.query_started(id, "bootstrap", b"", span, reply),
                Err(_) => {
                    let _ = reply.send(Err(NetworkError::NoKnownPeers));
                }
            },
            Command::PutRecord { key, value, reply } => {
                let record = kad::Record::new(key.clone(), value);
                let started = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One);
                self.query_or_store_error(started, "put_record", &key, span, reply);
            }
            Command::GetRecord { key, quorum, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(&key));
                self.trace_query(id, "get_record", &key, span);
                let lookup = RecordLookup::new(quorum);
                self.pending_get.insert(id, PendingGet { lookup, reply });
            }
            Command::StoreRecords { records, reply } => {
                let _ = reply.send(Ok(self.store_records(records)));
            }
            Command::StartProviding { key, reply } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let started = kad.start_providing(kad::RecordKey::new(&key));
                self.query_or_store_error(started, "start_providing", &key, span, reply);
            }
            Command::StopProviding { key, reply } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                kad.stop_providing(&kad::RecordKey::new(&key));
                let _ = reply.send(Ok(()));
            }
            Command::FindProviders { key, to } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.trace_query(id, "get_providers", &key, span);
                let sent = ProviderCap::default();
                self.pending_providers
                    .insert(id, ProviderSearch { sent, to });
            }
            Command::Publish { data, reply } => {
                let _ = reply.send(self.publish(data));
            }
            Command::ReportValidation {
                id,
                source,
                acceptance,
            } => self.judge_gossip(&id, &source, acceptance),
            Command::SendSync {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.sync.pending.insert(id, reply);
            }
            Command::SendFetch {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .fetch
                    .send_request(&peer, request);
                self.fetch.pending.insert(id, reply);
            }
            Command::SendHave {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().have.send_request(&peer, request);
                self.have.pending.insert(id, reply);
            }
            Command::RespondSync { id, response } => {
                let sync = &mut self.swarm.behaviour_mut().sync;
                respond(sync, &mut self.sync, id, response, "sync");
            }
            Command::RespondFetch { id, response } => self.respond_fetch(id, response),
            Command::RespondHave { id, response } => {
                let have = &mut self.swarm.behaviour_mut().have;
                respond(have, &mut self.have, id, response, "have");
            }
            Command::Info { reply } => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::GossipScore { peer, reply } => {
                let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
                let _ = reply.send(Ok(score));
            }
            Command::Block {
                peer,
                blocked,
                reply,
            } => {
                self.block(peer, blocked);
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown { reply } => {
                // Handled in `run`; unreachable here, answered anyway.
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn block(&mut self, peer: PeerId, blocked: bool) {
        let list = &mut self.swarm.behaviour_mut().blocked;
        if blocked {
            list.block_peer(peer);
        } else {
            list.unblock_peer(peer);
        }
    }

    /// Puts records in the local DHT store; returns the position and error of each refused.
    fn store_records(&mut self, records: Vec<kad::Record>) -> Vec<(usize, NetworkError)> {
        records
            .into_iter()
            .enumerate()
            .filter_map(|(i, record)| self.store_record(record).err().map(|e| (i, e)))
            .collect()
    }

    fn listen(&mut self, addr: Multiaddr, reply: Reply<Multiaddr>) {
        match self.swarm.listen_on(addr.clone()) {
            Ok(id) => {
                self.pending_listen.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NetworkError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dial.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NetworkError::Dial {
                    addr: addr.to_string(),
                    reason: super::events::dial_reason(&e),
                }));
            }
        }
    }

    /// Keeps `reply` for the end of query `id`, traced as a `kind` query of `key`.
    fn query_started(
        &mut self,
        id: QueryId,
        kind: &'static str,
        key: &[u8],
        span: &Span,
        reply: Reply<()>,
    ) {
        self.pending_query.insert(id, reply);
        self.trace_query(id, kind, key, span);
    }

    /// A DHT write started (its reply kept for its end), or refused by the local store.
    fn query_or_store_error(
        &mut self,
        started: Result<QueryId, kad::store::Error>,
        kind: &'static str,
        key: &[u8],
        span: &Span,
        reply: Reply<()>,
    ) {
        match started {
            Ok(id) => self.query_started(id, kind, key, span, reply),
            Err(e) => {
                let _ = reply.send(Err(NetworkError::Store(format!("{e:?}"))));
            }
        }
    }

    fn publish(&mut self, data: Vec<u8>) -> Result<(), NetworkError> {
        match self.swarm.behaviour_mut().gossipsub.publish(topic(), data) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetworkError::NoGossipPeers)
            }
            Err(e) => Err(NetworkError::Publish(e.to_string())),
        }
    }

    fn info(&mut self) -> NetworkInfo {
        let peer_addrs = self
            .connections
            .iter()
            .map(|(peer, connections)| {
                let addrs = connections
                    .iter()
                    .filter_map(|c| self.remotes.get(c))
                    .map(|e| {
                        // A dialed address ends with the peer's id, which says nothing here.
                        let mut addr = e.get_remote_address().clone();
                        if addr.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(*peer)) {
                            addr.pop();
                        }
                        addr
                    })
                    .collect();
                (*peer, addrs)
            })
            .collect();
        let swarm = &mut self.swarm;
        let routing_table_size = swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let gossip = &swarm.behaviour().gossipsub;
        let topic_hash = topic().hash();
        NetworkInfo {
            peer_id: *swarm.local_peer_id(),
            reachability: self.nat.reachability,
            peer_addrs,
            listen_addrs: swarm.listeners().cloned().collect(),
            external_addrs: swarm.external_addresses().cloned().collect(),
            connected_peers: swarm.connected_peers().copied().collect(),
            incoming_connections: swarm
                .network_info()
                .connection_counters()
                .num_established_incoming(),
            routing_table_size,
            gossip_mesh_peers: gossip.mesh_peers(&topic_hash).count(),
            gossip_topic_peers: gossip
                .all_peers()
                .filter(|(_, topics)| topics.contains(&&topic_hash))
                .count(),
            inbound_syncs_open: self.sync.open.total(),
            inbound_fetches_open: self.fetch.open.total(),
        }
    }

    /// Stores a record the registry accepted. A head only replaces a worse head; a release,
    /// once stored, is never replaced (releases are immutable; conflicts are the registry's
    /// to surface as equivocation).
    fn store_record(&mut self, record: kad::Record) -> Result<(), NetworkError> {
        let key =
            DhtKey::parse(record.key.as_ref()).map_err(|e| NetworkError::Store(e.to_string()))?;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Some(existing) = store.value(record.key.as_ref())
            && query::keeps_existing(&key, existing, &record.value)
        {
            return Ok(());
        }
        // The store keeps no publisher and no expiry: our copy does not expire on the
        // publisher's schedule, and replication puts it again.
        kad::store::RecordStore::put(store, record)
            .map_err(|e| NetworkError::Store(format!("{key}: {e:?}")))
    }
}

impl EventLoop {
    /// Answers a peer's chunk request `id`, if it still waits: a chunk when an upload slot
    /// is free or its turn comes, a refusal at once.
    fn respond_fetch(&mut self, id: InboundRequestId, response: FetchResponse) {
        let Some(channel) = self.fetch.inbound.remove(&id) else {
            return;
        };
        let now = std::time::Instant::now();
        let upload = match (response, self.fetch.open.peer_of(&id)) {
            (response @ FetchResponse::Chunk(_), Some(peer)) => {
                self.upload_slots.admit(id, peer, (channel, response), now)
            }
            (response, _) => Some((channel, response)),
        };
        if let Some(upload) = upload {
            self.write_uploads(vec![(id, upload)]);
        }
    }

    /// Chunk request `id`'s answer is written, or the request failed: the next waiting
    /// answers are written in the slots it frees.
    pub(super) fn upload_ended(&mut self, id: InboundRequestId) {
        let next = self.upload_slots.ended(id, std::time::Instant::now());
        self.write_uploads(next);
    }

    /// Writes the waiting answers that take the slots of stalled ones.
    pub(super) fn uploads_stalled(&mut self) {
        let next = self.upload_slots.start(std::time::Instant::now());
        self.write_uploads(next);
    }

    /// Hands answers to their streams. The slot of one whose requester went away is freed
    /// by the exchange's failure event, which libp2p emits for every answer it cannot send
    /// (`upload_ended`, from `on_exchange`).
    fn write_uploads(&mut self, uploads: Vec<(InboundRequestId, Upload)>) {
        let fetch = &mut self.swarm.behaviour_mut().fetch;
        for (id, (channel, response)) in uploads {
            if fetch.send_response(channel, response).is_err() {
                debug!(?id, "fetch requester went away before the response");
            }
        }
    }
}

/// Answers a peer's request `id` of one protocol (`what`), if it still waits for it.
fn respond<Req, Resp>(
    behaviour: &mut request_response::Behaviour<WireCodec<Req, Resp>>,
    exchanges: &mut Exchanges<Resp>,
    id: InboundRequestId,
    response: Resp,
    what: &str,
) where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    if let Some(channel) = exchanges.inbound.remove(&id)
        && behaviour.send_response(channel, response).is_err()
    {
        debug!(?id, "{what} requester went away before the response");
    }
}
