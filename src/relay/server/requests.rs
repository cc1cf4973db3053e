//! The requests of a TURN client under long-term credentials: the RFC 8489 §9.2.4 checks, Allocate and
//! Refresh (RFC 8656 §7), CreatePermission (§9) and ChannelBind (§11).

use super::*;

impl RelayServer {
    /// RFC 8489 §9.2.4: the checks of a request under long-term credentials, answering the failures.
    pub(super) fn authenticate<'m>(&mut self, now: Instant, reply: Reply, msg: &Message<'m>) -> Option<Authed<'m>> {
        if msg.raw(attr::MESSAGE_INTEGRITY).is_none() {
            self.stats.challenges += 1;
            self.error(reply, ErrorCode::UNAUTHORIZED, "Unauthorized", None, true, now);
            return None;
        }
        let (username, realm, nonce) = match (msg.get(attr::USERNAME), msg.get(attr::REALM), msg.get(attr::NONCE)) {
            (Ok(Some(Attribute::Username(u))), Ok(Some(Attribute::Realm(r))), Ok(Some(Attribute::Nonce(n)))) => {
                (u, r, n)
            }
            _ => {
                self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", None, now);
                return None;
            }
        };
        if self.nonces.check(now, reply.dst, nonce) != NonceCheck::Valid {
            self.stats.stale_nonces += 1;
            self.error(reply, ErrorCode::STALE_NONCE, "Stale Nonce", None, true, now);
            return None;
        }
        if realm != self.config.realm {
            self.stats.auth_failures += 1;
            self.error(reply, ErrorCode::UNAUTHORIZED, "Unauthorized", None, true, now);
            return None;
        }
        let (key, quota_name) = match self.config.credentials.key(username, realm, self.unix_now(now)) {
            Ok(k) => k,
            Err(why) => {
                self.stats.auth_failures += 1;
                let what = if why == Rejected::Expired { "expired" } else { "unknown" };
                log::debug!(target: LOG, "{}: {what} user {username:?}", reply.dst);
                self.error(reply, ErrorCode::UNAUTHORIZED, "Unauthorized", None, true, now);
                return None;
            }
        };
        if msg.check_integrity(&key).is_err() {
            self.stats.auth_failures += 1;
            log::debug!(target: LOG, "{}: wrong MESSAGE-INTEGRITY for {username:?}", reply.dst);
            self.error(reply, ErrorCode::UNAUTHORIZED, "Unauthorized", None, true, now);
            return None;
        }
        Some(Authed { key, username, quota_name })
    }

    /// The allocation of this 5-tuple for a request after Allocate: 437 without one, 441 for another user.
    pub(super) fn own_allocation(
        &mut self,
        now: Instant,
        rx: &Received,
        reply: Reply,
        auth: &Authed<'_>,
    ) -> Option<usize> {
        let Some(&slot) = self.by_client.get(&(rx.transport, rx.source, rx.local)) else {
            self.other_error(reply, ErrorCode::ALLOCATION_MISMATCH, "Allocation Mismatch", Some(&auth.key), now);
            return None;
        };
        if self.alloc(slot).is_some_and(|a| &*a.username != auth.username) {
            self.stats.auth_failures += 1;
            self.error(reply, ErrorCode::WRONG_CREDENTIALS, "Wrong Credentials", Some(&auth.key), false, now);
            return None;
        }
        Some(slot)
    }

    pub(super) fn lifetime(&self, requested: Option<u32>) -> Duration {
        match requested {
            Some(s) if Duration::from_secs(s.into()) > self.config.default_lifetime => {
                Duration::from_secs(s.into()).min(self.config.max_lifetime)
            }
            _ => self.config.default_lifetime,
        }
    }

    pub(super) fn requested_lifetime(msg: &Message<'_>) -> Option<u32> {
        match msg.get(attr::LIFETIME) {
            Ok(Some(Attribute::Lifetime(s))) => Some(s),
            _ => None,
        }
    }

    pub(super) fn on_allocate(&mut self, now: Instant, rx: Received, msg: &Message<'_>) {
        let reply = Reply::to(&rx, msg);
        let Some(auth) = self.authenticate(now, reply, msg) else { return };
        let five = (rx.transport, rx.source, rx.local);
        if let Some(&slot) = self.by_client.get(&five) {
            let (same, opened) =
                self.alloc(slot).map_or((false, false), |a| (a.transaction == reply.transaction, a.relay.is_some()));
            match (same, opened) {
                (true, true) => self.allocate_success(now, slot, reply, None),
                (true, false) => {} // the answer follows when the relay socket is open
                _ => {
                    self.other_error(reply, ErrorCode::ALLOCATION_MISMATCH, "Allocation Mismatch", Some(&auth.key), now)
                }
            }
            return;
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            Ok(Some(Attribute::RequestedTransport(UDP_PROTOCOL))) => {}
            Ok(Some(Attribute::RequestedTransport(_))) => {
                return self.other_error(
                    reply,
                    ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    "Unsupported Transport Protocol",
                    Some(&auth.key),
                    now,
                );
            }
            _ => return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&auth.key), now),
        }
        // Not offered: DF on relayed datagrams (RFC 8656 §7.2 step 4 says to treat it as an unknown
        // comprehension-required attribute then).
        if msg.raw(attr::DONT_FRAGMENT).is_some() {
            self.stats.other_errors += 1;
            let key = auth.key;
            self.answer(reply, Class::Error, Some(&key), |w| {
                w.add(&Attribute::ErrorCode(ErrorCode {
                    code: ErrorCode::UNKNOWN_ATTRIBUTE,
                    reason: "Unknown Attribute",
                }))?;
                w.add_unknown_attributes(&[attr::DONT_FRAGMENT])
            });
            return;
        }
        // EVEN-PORT, with its R bit a reservation of the next port (RFC 8656 §7.2 steps 5-6); an Allocate
        // with a RESERVATION-TOKEN takes the reserved port; both at once is a 400.
        let (even, reserve_next) = match msg.get(attr::EVEN_PORT) {
            Ok(Some(Attribute::EvenPort(r))) => (true, r),
            // `get(EVEN_PORT)` decodes nothing else; a malformed value is a 400.
            Ok(_) => (false, false),
            Err(_) => return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&auth.key), now),
        };
        let token = match msg.get(attr::RESERVATION_TOKEN) {
            Ok(Some(Attribute::ReservationToken(t))) => Some(t),
            Ok(_) => None,
            Err(_) => return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&auth.key), now),
        };
        if even && token.is_some() {
            return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&auth.key), now);
        }
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            Ok(Some(Attribute::RequestedAddressFamily(f))) => f,
            Ok(None) => Family::V4,
            _ => return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&auth.key), now),
        };
        if self.config.relay_family.is_some_and(|f| f != family) {
            return self.other_error(
                reply,
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                "Address Family not Supported",
                Some(&auth.key),
                now,
            );
        }
        if self.quotas.get(auth.quota_name).copied().unwrap_or(0) >= self.config.user_quota {
            self.stats.quota_refused += 1;
            log::debug!(target: LOG, "{}: allocation quota of {:?} reached", rx.source, auth.quota_name);
            self.error(
                reply,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                "Allocation Quota Reached",
                Some(&auth.key),
                false,
                now,
            );
            return;
        }
        if self.by_client.len() >= self.config.max_allocations {
            self.stats.capacity_refused += 1;
            self.error(reply, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(&auth.key), false, now);
            return;
        }
        let reserved = match token {
            Some(t) => match self.reservations.remove(&t) {
                Some((addr, until)) if until > now => Some(addr),
                Some((addr, _)) => {
                    self.events.push_back(Event::CloseRelay { id: 0, relay: addr });
                    None
                }
                None => None,
            },
            None => None,
        };
        if token.is_some() && reserved.is_none() {
            self.stats.capacity_refused += 1;
            return self.error(
                reply,
                ErrorCode::INSUFFICIENT_CAPACITY,
                "Insufficient Capacity",
                Some(&auth.key),
                false,
                now,
            );
        }
        let lifetime = self.lifetime(Self::requested_lifetime(msg));
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.generation = self.generation.wrapping_add(1);
        let id = (u64::from(self.generation) << 32) | slot as u64;
        self.slots[slot] = Some(Allocation {
            id,
            client: rx.source,
            server: rx.local,
            relay: None,
            transport: rx.transport,
            username: auth.username.into(),
            quota_name: auth.quota_name.into(),
            key: auth.key,
            expires: now + lifetime,
            transaction: reply.transaction,
            fingerprint: reply.fingerprint,
            permissions: Vec::new(),
            channels: Vec::new(),
            bucket: Bucket::new(self.config.bandwidth, now),
        });
        self.by_client.insert(five, slot);
        *self.quotas.entry(auth.quota_name.into()).or_insert(0) += 1;
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        if let Some(relay) = reserved {
            // The driver has had this socket open since the reservation: the allocation takes it at once.
            if let Some(a) = self.slots[slot].as_mut() {
                a.relay = Some(relay);
            }
            self.by_relay.insert(relay, slot);
            self.stats.allocations_created += 1;
            log::info!(target: LOG, "allocation for {} ({}): reserved relay {relay}", rx.source, auth.username);
            self.allocate_success(now, slot, reply, None);
            return;
        }
        if reserve_next {
            self.reserving.push(id);
        }
        self.events.push_back(Event::OpenRelay { id, family, even, reserve_next, client: rx.source });
    }

    pub(super) fn on_refresh(&mut self, now: Instant, rx: Received, msg: &Message<'_>) {
        let reply = Reply::to(&rx, msg);
        let Some(auth) = self.authenticate(now, reply, msg) else { return };
        let Some(slot) = self.own_allocation(now, &rx, reply, &auth) else { return };
        let requested = Self::requested_lifetime(msg);
        let granted = if requested == Some(0) {
            self.remove(slot, Some(false));
            0
        } else {
            let lifetime = self.lifetime(requested);
            if let Some(a) = self.slots[slot].as_mut() {
                a.expires = now + lifetime;
            }
            lifetime.as_secs() as u32
        };
        self.answer(reply, Class::Success, Some(&auth.key), |w| w.add(&Attribute::Lifetime(granted)));
    }

    /// The peer of an XOR-PEER-ADDRESS checked for an allocation: 443 for the other family, 403 for a peer
    /// the policy refuses. Answers the failure.
    pub(super) fn check_peer(&mut self, now: Instant, reply: Reply, key: &Key, slot: usize, peer: SocketAddr) -> bool {
        let relay = self.alloc(slot).and_then(|a| a.relay);
        if relay.is_some_and(|r| r.is_ipv4() != peer.is_ipv4()) {
            self.other_error(
                reply,
                ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                "Peer Address Family Mismatch",
                Some(key),
                now,
            );
            return false;
        }
        if let Err(why) = self.config.policy.check(peer) {
            self.stats.peer_denied += 1;
            log::debug!(target: LOG, "{}: peer {peer} refused: {why}", reply.dst);
            self.error(reply, ErrorCode::FORBIDDEN, "Forbidden", Some(key), false, now);
            return false;
        }
        true
    }

    pub(super) fn on_create_permission(&mut self, now: Instant, rx: Received, msg: &Message<'_>) {
        let reply = Reply::to(&rx, msg);
        let Some(auth) = self.authenticate(now, reply, msg) else { return };
        let Some(slot) = self.own_allocation(now, &rx, reply, &auth) else { return };
        let key = auth.key;
        let mut count = 0;
        for raw in msg.effective_attributes().filter(|a| a.kind == attr::XOR_PEER_ADDRESS) {
            let Ok(Attribute::XorPeerAddress(peer)) = Attribute::decode(raw, msg.raw_id()) else {
                return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&key), now);
            };
            if !self.check_peer(now, reply, &key, slot, peer) {
                return;
            }
            count += 1;
        }
        if count == 0 {
            return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&key), now);
        }
        // All peers passed: install them all (RFC 8656 §9.2: all or none).
        let until = now + self.config.permission_lifetime;
        let mut full = false;
        if let Some(a) = self.slots[slot].as_mut() {
            for raw in msg.effective_attributes().filter(|a| a.kind == attr::XOR_PEER_ADDRESS) {
                if let Ok(Attribute::XorPeerAddress(peer)) = Attribute::decode(raw, msg.raw_id()) {
                    full |= !a.permit(peer.ip(), until);
                }
            }
        }
        if full {
            return self.refuse_capacity(reply, &key, now);
        }
        self.answer(reply, Class::Success, Some(&key), |_| Ok(()));
    }

    /// 508 Insufficient Capacity (a permission or channel table is full), counted.
    fn refuse_capacity(&mut self, reply: Reply, key: &[u8; 16], now: Instant) {
        self.stats.capacity_refused += 1;
        self.error(reply, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(key), false, now)
    }

    pub(super) fn on_channel_bind(&mut self, now: Instant, rx: Received, msg: &Message<'_>) {
        let reply = Reply::to(&rx, msg);
        let Some(auth) = self.authenticate(now, reply, msg) else { return };
        let Some(slot) = self.own_allocation(now, &rx, reply, &auth) else { return };
        let key = auth.key;
        let (number, peer) = match (msg.get(attr::CHANNEL_NUMBER), msg.get(attr::XOR_PEER_ADDRESS)) {
            (Ok(Some(Attribute::ChannelNumber(n))), Ok(Some(Attribute::XorPeerAddress(p))))
                if is_bindable_channel(n) =>
            {
                (n, p)
            }
            _ => return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&key), now),
        };
        if !self.check_peer(now, reply, &key, slot, peer) {
            return;
        }
        let until = now + self.config.channel_lifetime;
        let perm_until = now + self.config.permission_lifetime;
        let Some(a) = self.slots[slot].as_mut() else { return };
        // RFC 8656 §11.2: the number may not be bound to another peer, nor the peer to another number,
        // counting bindings still in their quarantine after expiry.
        let conflict = a.channels.iter().any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return self.other_error(reply, ErrorCode::BAD_REQUEST, "Bad Request", Some(&key), now);
        }
        let existing = a.channels.iter().position(|c| c.number == number);
        let ok = match existing {
            Some(i) => {
                a.channels[i].expires = until;
                true
            }
            None if a.channels.len() < MAX_CHANNELS => {
                if a.channels.capacity() == 0 {
                    a.channels.reserve_exact(4);
                }
                a.channels.push(Channel { number, peer, expires: until });
                true
            }
            None => false,
        } && a.permit(peer.ip(), perm_until);
        if !ok {
            return self.refuse_capacity(reply, &key, now);
        }
        self.answer(reply, Class::Success, Some(&key), |_| Ok(()));
    }
}
