//! Virtual OSDP readers on a virtual bus, for `portcullis simulate` and the demo: a TCP server
//! standing in for a serial-device server, whose readers answer a Control Panel's polls (ID with
//! an identity, POLL with ACK or a card read waiting to be sent, anything else with ACK).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::osdp::{Packet, Reply, decode};

/// The bus: where a Control Panel connects, and the cards waiting at each reader.
#[derive(Clone)]
pub struct VirtualBus {
    pub port: u16,
    waiting: Arc<Mutex<HashMap<u8, VecDeque<Vec<bool>>>>>,
}

impl VirtualBus {
    /// Listens on 127.0.0.1 (a free port) for the Control Panel; readers at `addresses` answer.
    pub async fn start(addresses: Vec<u8>) -> std::io::Result<(VirtualBus, impl Future<Output = ()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let bus = VirtualBus {
            port: listener.local_addr()?.port(),
            waiting: Arc::new(Mutex::new(addresses.into_iter().map(|a| (a, VecDeque::new())).collect())),
        };
        let waiting = bus.waiting.clone();
        let serve = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                serve(stream, &waiting).await;
            }
        };
        Ok((bus, serve))
    }

    /// A card held to the reader at `address` (sent at its next poll).
    pub async fn present(&self, address: u8, bits: Vec<bool>) {
        if let Some(queue) = self.waiting.lock().await.get_mut(&address) {
            queue.push_back(bits);
        }
    }
}

/// Answers one Control Panel until it goes.
async fn serve(mut stream: tokio::net::TcpStream, waiting: &Mutex<HashMap<u8, VecDeque<Vec<bool>>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        while let Ok((packet, used)) = decode(&buf) {
            buf.drain(..used.min(buf.len()));
            if packet.reply {
                continue;
            }
            let mut readers = waiting.lock().await;
            let Some(queue) = readers.get_mut(&packet.addr) else { continue };
            let reply = match packet.code {
                0x61 => Reply::PdId {
                    vendor: [0x50, 0x43, 0x4c],
                    model: 1,
                    version: 1,
                    serial: u32::from(packet.addr),
                    firmware: [1, 0, 0],
                },
                0x60 => match queue.pop_front() {
                    Some(bits) => Reply::Raw { reader: 0, format: 1, bits },
                    None => Reply::Ack,
                },
                _ => Reply::Ack,
            };
            drop(readers);
            let (code, data) = reply.encode();
            let answer = Packet { addr: packet.addr, reply: true, seq: packet.seq, crc: packet.crc, code, data };
            if stream.write_all(&answer.encode(true)).await.is_err() {
                return;
            }
        }
        // Noise that is not a packet is dropped rather than kept forever.
        if buf.len() > 4096 {
            buf.clear();
        }
    }
}
