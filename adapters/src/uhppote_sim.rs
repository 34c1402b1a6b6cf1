//! A virtual UHPPOTE controller, for `portcullis simulate`, the demo and the tests: a UDP socket
//! that keeps a card table as a UT0311 does (put, delete, delete all, look up), answers status,
//! opens doors, and, when a card is swiped, decides from its own table and reports the swipe to
//! its event listener. It can be taken off the network ([`VirtualController::set_online`]) and
//! keeps its table meanwhile, as a controller whose link is cut does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

use crate::uhppote::{Card, Event, Message, PACKET_LEN, Reply, Request, Status, function};

#[derive(Default)]
struct State {
    cards: HashMap<u32, Card>,
    listener: Option<SocketAddr>,
    last: Option<Event>,
    online: bool,
    /// Changes to its table (puts and deletes) it has applied.
    changes: u64,
}

/// One virtual controller.
#[derive(Clone)]
pub struct VirtualController {
    pub serial: u32,
    pub addr: SocketAddr,
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
}

impl VirtualController {
    /// Listens on `bind` (port 0: a free one); answers once the returned future runs.
    pub async fn start(
        serial: u32,
        bind: SocketAddr,
    ) -> std::io::Result<(VirtualController, impl Future<Output = ()>)> {
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        let controller = VirtualController {
            serial,
            addr: socket.local_addr()?,
            socket,
            state: Arc::new(Mutex::new(State { online: true, ..State::default() })),
        };
        let serving = controller.clone();
        Ok((controller, async move { serving.serve().await }))
    }

    async fn serve(&self) {
        let mut buf = [0u8; 1024];
        loop {
            let Ok((len, from)) = self.socket.recv_from(&mut buf).await else { continue };
            let Some(reply) = self.answer(buf.get(..len).unwrap_or_default()).await else { continue };
            let _ = self.socket.send_to(&reply.encode(self.serial), from).await;
        }
    }

    /// The answer to one datagram; `None` for what a controller ignores (not for it, malformed,
    /// or while it is offline).
    async fn answer(&self, bytes: &[u8]) -> Option<Reply> {
        let Message { serial, body } = Request::decode(bytes).ok()?;
        let mut state = self.state.lock().await;
        if !state.online || (serial != self.serial && serial != 0) {
            return None;
        }
        Some(match body {
            Request::GetStatus => {
                Reply::Status(Status { event: state.last, door_open: [false; 4], system_error: 0, relays: 0 })
            }
            Request::OpenDoor { .. } => Reply::Done { function: function::OPEN_DOOR, ok: true },
            Request::PutCard(card) => {
                state.cards.insert(card.number, card);
                state.changes += 1;
                Reply::Done { function: function::PUT_CARD, ok: true }
            }
            Request::DeleteCard { number } => {
                state.cards.remove(&number);
                state.changes += 1;
                // A controller answers a delete of a card it does not hold as done, too.
                Reply::Done { function: function::DELETE_CARD, ok: true }
            }
            Request::DeleteAllCards => {
                state.cards.clear();
                state.changes += 1;
                Reply::Done { function: function::DELETE_ALL_CARDS, ok: true }
            }
            Request::GetCard { number } => Reply::Card(state.cards.get(&number).copied()),
            Request::CountCards => Reply::CardCount(u32::try_from(state.cards.len()).unwrap_or(u32::MAX)),
            Request::SetListener { listener } => {
                state.listener = Some(SocketAddr::V4(listener));
                Reply::Done { function: function::SET_LISTENER, ok: true }
            }
        })
    }

    /// Takes the controller off the network (`false`: it answers nothing and reports nothing)
    /// or puts it back. Its card table stays.
    pub async fn set_online(&self, online: bool) {
        self.state.lock().await.online = online;
    }

    /// The card table.
    pub async fn cards(&self) -> HashMap<u32, Card> {
        self.state.lock().await.cards.clone()
    }

    /// Changes applied to the table so far.
    pub async fn changes(&self) -> u64 {
        self.state.lock().await.changes
    }

    /// Where its events go, once a server has set it.
    pub async fn listener(&self) -> Option<SocketAddr> {
        self.state.lock().await.listener
    }

    /// A card swiped at `door` at `at` (the controller's local time): decided from the table,
    /// reported to the listener (if one is set and the controller is online), and returned.
    pub async fn swipe(&self, card: u32, door: u8, at: NaiveDateTime) -> Event {
        let mut state = self.state.lock().await;
        let day: NaiveDate = at.date();
        let granted = state.cards.get(&card).is_some_and(|c| c.opens(door, day));
        let event = Event {
            index: state.last.map_or(1, |e| e.index.wrapping_add(1)),
            kind: Event::SWIPE,
            granted,
            door,
            direction: 1,
            card,
            at: Some(at),
            reason: if granted { 1 } else { 6 },
        };
        state.last = Some(event);
        if let (true, Some(listener)) = (state.online, state.listener) {
            let report =
                Reply::Status(Status { event: Some(event), door_open: [false; 4], system_error: 0, relays: 0 });
            let bytes: [u8; PACKET_LEN] = report.encode(self.serial);
            let _ = self.socket.send_to(&bytes, listener).await;
        }
        event
    }
}
