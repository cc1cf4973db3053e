//! The relayed data (RFC 8656 §10 Send and Data indications, §12 ChannelData): client to peer through the
//! relay socket, and peer to client, gated by permissions and the allocation's bandwidth budget. Nothing here
//! allocates: buffers come from the engine's recycled pool.

use super::*;

impl RelayServer {
    /// Client to peer (Send indication or ChannelData): the checks, then `data` out of the relay socket.
    pub(super) fn relay_to_peer(&mut self, now: Instant, slot: usize, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.slots.get_mut(slot).and_then(|a| a.as_mut()) else { return };
        let Some(relay) = a.relay else { return };
        if !a.has_permission(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return;
        }
        if !a.bucket.take(now, data.len()) {
            self.stats.dropped_bandwidth += 1;
            return;
        }
        let Some(mut buf) = self.buffer() else { return };
        buf[..data.len()].copy_from_slice(data);
        self.push(relay, peer, buf, data.len());
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.len() as u64;
    }

    pub(super) fn on_send(&mut self, now: Instant, rx: Received, msg: &Message<'_>) {
        let Some(&slot) = self.by_client.get(&(rx.transport, rx.source, rx.local)) else {
            self.stats.dropped_no_permission += 1;
            return;
        };
        match (msg.get(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA)) {
            (Ok(Some(Attribute::XorPeerAddress(peer))), Ok(Some(Attribute::Data(data)))) => {
                self.relay_to_peer(now, slot, peer, data)
            }
            _ => self.stats.dropped_malformed += 1,
        }
    }

    pub(super) fn on_channel_data(&mut self, now: Instant, rx: Received, data: &[u8]) {
        let Ok(cd) = ChannelData::parse(data) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let peer = self
            .by_client
            .get(&(rx.transport, rx.source, rx.local))
            .and_then(|&slot| Some((slot, self.alloc(slot)?.channel_peer(cd.channel, now)?)));
        match peer {
            Some((slot, peer)) => self.relay_to_peer(now, slot, peer, cd.data),
            None => self.stats.dropped_no_permission += 1,
        }
    }

    /// Peer to client: ChannelData when a channel is bound to the peer, else a Data indication (§10.3).
    pub(super) fn relay_to_client(&mut self, now: Instant, slot: usize, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.slots.get_mut(slot).and_then(|a| a.as_mut()) else { return };
        if !a.has_permission(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return;
        }
        if data.len() > MAX_PEER_DATA {
            self.stats.dropped_malformed += 1;
            return;
        }
        if !a.bucket.take(now, data.len()) {
            self.stats.dropped_bandwidth += 1;
            return;
        }
        let (client, server, channel, pad) =
            (a.client, a.server, a.channel_to(peer, now), a.transport == Transport::Tcp);
        let Some(mut buf) = self.buffer() else { return };
        let written = match channel {
            Some(number) => {
                buf[CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + data.len()].copy_from_slice(data);
                ChannelData::write_header(number, data.len(), pad, &mut buf)
            }
            None => {
                let id = self.indication_id();
                MessageWriter::new(&mut buf, MessageType::new(Method::DATA, Class::Indication), &id).and_then(
                    |mut w| {
                        w.add(&Attribute::XorPeerAddress(peer))?;
                        w.add(&Attribute::Data(data))?;
                        Ok(w.finish())
                    },
                )
            }
        };
        match written {
            Ok(n) => {
                self.push(server, client, buf, n);
                self.stats.to_client_packets += 1;
                self.stats.to_client_bytes += data.len() as u64;
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                self.spare.push(buf);
            }
        }
    }
}
