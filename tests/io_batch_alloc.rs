//! The batched UDP path stund and stunload run on (`holepunch::io::batch`) does not touch the heap once its
//! batches exist: a receive, reading each datagram and its source, queueing answers to those sources and one
//! send of the batch are zero allocations. Counted with a per-thread counting allocator (tests run on several
//! threads; only this thread's allocations are counted). Loopback only.
#![cfg(target_os = "linux")]

use holepunch::io::batch::{RecvBatch, SendBatch, Wait};
use std::net::UdpSocket;
use std::time::Duration;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

#[test]
fn receive_answer_and_send_allocate_nothing() {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = server.local_addr().unwrap();
    let mut rx = RecvBatch::new(32, 548);
    let mut tx = SendBatch::new(32, 548);
    for round in 0..3u8 {
        for i in 0..4u8 {
            client.send_to(&[round, i], to).unwrap();
        }
        let mut got = 0;
        while got < 4 {
            let (n, received) = allocations_in(|| {
                let n = rx.recv(&server, 32, Wait::ForFirst).unwrap();
                for i in 0..n {
                    let d = rx.get(i);
                    let out = tx.next_slot().unwrap();
                    out[..d.data.len()].copy_from_slice(d.data);
                    out[0] = b'A';
                    tx.push(d.data.len(), d.source);
                }
                let sent = tx.send_all(&server);
                assert_eq!(sent.failed, 0);
                n
            });
            assert_eq!(n, 0, "allocations in round {round}");
            got += received;
        }
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            let len = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len][..1], b"A");
        }
    }
}
