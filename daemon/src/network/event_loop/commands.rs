//! The event loop's answers to commands from `NetworkHandle`s: each starts swarm work and
//! keeps its reply until the work ends, or answers at once.

use super::*;

impl EventLoop {
    pub(super) fn on_command(&mut self, command: Command, span: &Span) {
        self.metrics.commands.inc();
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.pending_listen.insert(id, (addr, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(NetworkError::Listen {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    }));
                }
            },
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dial.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::AddAddress { peer, addr, reply } => {
                behaviour.kad.add_address(&peer, addr);
                let _ = reply.send(Ok(()));
            }
            Command::Bootstrap { reply } => match behaviour.kad.bootstrap() {
                Ok(id) => {
                    self.pending_query.insert(id, reply);
                    self.trace_query(id, "bootstrap", b"", span);
                }
                Err(_) => {
                    let _ = reply.send(Err(NetworkError::NoKnownPeers));
                }
            },
            Command::PutRecord { key, value, reply } => {
                let record = kad::Record::new(key.clone(), value);
                match behaviour.kad.put_record(record, kad::Quorum::One) {
                    Ok(id) => {
                        self.pending_query.insert(id, reply);
                        self.trace_query(id, "put_record", &key, span);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Store(format!("{e:?}"))));
                    }
                }
            }
            Command::GetRecord { key, quorum, reply } => {
                let id = behaviour.kad.get_record(kad::RecordKey::new(&key));
                self.trace_query(id, "get_record", &key, span);
                self.pending_get.insert(
                    id,
                    PendingGet {
                        lookup: RecordLookup::new(quorum),
                        reply,
                    },
                );
            }
            Command::StoreRecords { records, reply } => {
                let refused = records
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, record)| self.store_record(record).err().map(|e| (i, e)))
                    .collect();
                let _ = reply.send(Ok(refused));
            }
            Command::StartProviding { key, reply } => {
                match behaviour.kad.start_providing(kad::RecordKey::new(&key)) {
                    Ok(id) => {
                        self.pending_query.insert(id, reply);
                        self.trace_query(id, "start_providing", &key, span);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Store(format!("{e:?}"))));
                    }
                }
            }
            Command::StopProviding { key, reply } => {
                behaviour.kad.stop_providing(&kad::RecordKey::new(&key));
                let _ = reply.send(Ok(()));
            }
            Command::FindProviders { key, to } => {
                let id = behaviour.kad.get_providers(kad::RecordKey::new(&key));
                self.trace_query(id, "get_providers", &key, span);
                self.pending_providers.insert(
                    id,
                    ProviderSearch {
                        sent: ProviderCap::default(),
                        to,
                    },
                );
            }
            Command::Publish { data, reply } => {
                let result = match behaviour.gossipsub.publish(topic(), data) {
                    Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        Err(NetworkError::NoGossipPeers)
                    }
                    Err(e) => Err(NetworkError::Publish(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::ReportValidation {
                id,
                source,
                acceptance,
            } => {
                behaviour
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::SendSync {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.sync.send_request(&peer, request);
                self.sync.pending.insert(id, reply);
            }
            Command::SendFetch {
                peer,
                request,
                reply,
            } => {
                let id = behaviour.fetch.send_request(&peer, request);
                self.fetch.pending.insert(id, reply);
            }
            Command::RespondSync { id, response } => {
                if let Some(channel) = self.sync.inbound.remove(&id)
                    && behaviour.sync.send_response(channel, response).is_err()
                {
                    debug!(?id, "sync requester went away before the response");
                }
            }
            Command::RespondFetch { id, response } => {
                if let Some(channel) = self.fetch.inbound.remove(&id)
                    && behaviour.fetch.send_response(channel, response).is_err()
                {
                    debug!(?id, "fetch requester went away before the response");
                }
            }
            Command::Info { reply } => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::GossipScore { peer, reply } => {
                let _ = reply.send(Ok(behaviour.gossipsub.peer_score(&peer)));
            }
            Command::Block {
                peer,
                blocked,
                reply,
            } => {
                if blocked {
                    behaviour.blocked.block_peer(peer);
                } else {
                    behaviour.blocked.unblock_peer(peer);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown { reply } => {
                // Handled in `run`; unreachable here, answered anyway.
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn info(&mut self) -> NetworkInfo {
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
