//! Unary gRPC calls on the generator's own HTTP/2 client: one socket, one task that reads and
//! writes it, and workers that each own one stream at a time. Here a call's HEADERS are
//! encoded once per method, a worker appends its two frames to a shared buffer and waits on a
//! slot, and the connection task writes every queued request in one syscall and answers each
//! stream's slot as frames arrive.
//!
//! Why own this instead of using `h2` (already in the build): measured side by side by
//! `scripts/bench-clients` (results/benchmarks/clients.md), h2 0.4 used directly, in its best
//! shape here (each connection's task polling its in-flight calls as futures of the same task,
//! so writes batch), reached 0.82x this client's rate and 0.87x h2load's on grpc.health.v1
//! Check, 0.89x and 0.86x on sluice.v1 Check, at 1.4x to 1.7x the client CPU per call (per
//! call it builds a Request and a HeaderMap and HPACK-encodes them again). The rule for
//! switching was 0.9x of both on both calls. On two shared cores the client's CPU is the
//! service's loss, so the generator keeps this client.
//!
//! Kept honest by: the h2 crate's server scripted to misbehave (tests/grpc_client.rs: stream
//! limits, GOAWAY, RST_STREAM, cancellation, large answers), gRPC's C core as a second server
//! implementation with its own HPACK encoder and stream accounting (tests/second_server.rs;
//! it found that C core refuses streams it still counts, now sent again as gRPC clients do),
//! and fuzzing of the frame reader (random bytes from a server) and the HPACK decoder
//! (random blocks) with proptest.
//!
//! Scope, by design: HTTP/2 with prior knowledge (cleartext, or over TLS with ALPN h2), as
//! gRPC uses it; request messages up to one frame (16 KiB), responses up to 4 MiB
//! (`STREAM_WINDOW`); no server push. Everything else a server may send (SETTINGS, PING,
//! GOAWAY, RST_STREAM, WINDOW_UPDATE, CONTINUATION, padding, an HPACK dynamic table) is
//! honoured.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ErrorKind;
use crate::{
    hpack,
    socket::{Dialer, Socket},
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113 section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;

/// How often a call refused before the server processed it (RST_STREAM REFUSED_STREAM) is
/// sent again on a new stream, as gRPC clients do, before it counts as unavailable.
const REFUSED_RETRIES: u32 = 8;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The most one response may carry: gRPC's default maximum message. Streams' windows are never
/// raised, so a larger answer stalls until the request's timeout.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 1 << 30;
/// Every HTTP/2 peer accepts frames this large; we never advertise more.
const MAX_FRAME_SIZE: usize = 16_384;
const HEADER_TABLE_SIZE: usize = 4096;
const MAX_STREAM_ID: u32 = (1 << 31) - 1;
const READ_BUFFER: usize = 64 * 1024;
/// Reads handled in one turn before the connection lets other tasks run.
const READS_PER_TURN: usize = 16;

/// One HTTP/2 connection; clones share it (calls multiplex as streams). The connection closes
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    dialer: Dialer,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.abandoned = true;
        state.request_write();
    }
}

/// A call's request HEADERS block, encoded once for its connection's authority.
#[derive(Clone)]
pub struct RequestHead {
    block: Bytes,
}

struct Shared {
    /// No new stream may start: the connection ended, the server is going away, or stream ids
    /// ran out. Read before every call, so it is kept outside the lock.
    unusable: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// Frames queued for the connection task to write.
    outgoing: Vec<u8>,
    connection_task: Option<Waker>,
    /// The connection task has been woken for `outgoing` and has not taken it yet.
    write_requested: bool,
    streams: HashMap<u32, Stream>,
    /// Streams answered whose caller has not taken the answer yet: callers woken and waiting
    /// for their turn, who may queue their next request in it (see `poll_write`).
    uncollected: usize,
    next_stream_id: u32,
    /// Bytes of DATA the server's connection window still accepts.
    send_window: i64,
    peer: PeerSettings,
    settings_received: bool,
    /// Callers waiting for send window, a stream slot under the server's limit, or its SETTINGS.
    waiting: Vec<Waker>,
    /// The server sent GOAWAY: streams in flight may finish, no new one may start.
    going_away: bool,
    ended: bool,
    abandoned: bool,
}

struct PeerSettings {
    max_streams: usize,
    initial_window: usize,
    max_frame: usize,
}

#[derive(Default)]
struct Stream {
    waker: Option<Waker>,
    headers_seen: bool,
    body: Option<Bytes>,
    result: Option<Result<Bytes, ErrorKind>>,
    /// Reset with REFUSED_STREAM: the server did not process it, so it may be sent again.
    refused: bool,
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("HTTP/2 protocol error: {0}")]
    Protocol(&'static str),
    #[error("response headers: {0}")]
    Hpack(#[from] hpack::Error),
}

impl Connection {
    /// Dials, sends the preface and waits for the server's SETTINGS, so the first calls
    /// already respect its limits.
    pub async fn connect(dialer: &Dialer) -> anyhow::Result<Self> {
        let authority = dialer.authority();
        anyhow::ensure!(
            authority.len() <= 255,
            "target authority `{authority}` is longer than 255 bytes"
        );
        let mut socket = dialer.dial().await?;
        let settings = [
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_HEADER_TABLE_SIZE, HEADER_TABLE_SIZE as u32),
        ];
        let mut hello = PREFACE.to_vec();
        put_frame_header(&mut hello, settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            hello.put_u16(id);
            hello.put_u32(value);
        }
        put_frame_header(&mut hello, 4, WINDOW_UPDATE, 0, 0);
        hello.put_u32(CONNECTION_WINDOW - 65_535);
        socket.write_all(&hello).await?;
        socket.flush().await?;

        let shared = Arc::new(Shared {
            unusable: AtomicBool::new(false),
            state: Mutex::new(State {
                outgoing: Vec::with_capacity(READ_BUFFER),
                connection_task: None,
                write_requested: false,
                streams: HashMap::new(),
                uncollected: 0,
                next_stream_id: 1,
                send_window: 65_535,
                peer: PeerSettings {
                    max_streams: usize::MAX,
                    initial_window: 65_535,
                    max_frame: MAX_FRAME_SIZE,
                },
                settings_received: false,
                waiting: Vec::new(),
                going_away: false,
                ended: false,
                abandoned: false,
            }),
        });
        tokio::spawn(ConnectionTask::new(socket, Arc::clone(&shared)).run());
        let settings = poll_fn(|cx| {
            let mut state = shared.state.lock();
            if state.settings_received {
                Poll::Ready(Ok(()))
            } else if state.ended {
                Poll::Ready(Err(anyhow::anyhow!(
                    "{authority} closed the connection without HTTP/2 SETTINGS: is it a gRPC endpoint?"
                )))
            } else {
                state.waiting.push(cx.waker().clone());
                Poll::Pending
            }
        });
        tokio::time::timeout(Duration::from_secs(10), settings)
            .await
            .map_err(|_| anyhow::anyhow!("{authority} sent no HTTP/2 SETTINGS within 10 s"))??;
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                dialer: dialer.clone(),
            }),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.handle.shared.unusable.load(Ordering::Acquire)
    }

    /// How this connection was dialed, to dial it again.
    pub fn dialer(&self) -> &Dialer {
        &self.handle.dialer
    }

    /// The request HEADERS of a call to `path` on this connection.
    pub fn request_head(&self, path: &'static str) -> RequestHead {
        RequestHead {
            block: hpack::encode_grpc_request(
                path,
                self.handle.dialer.authority(),
                self.handle.dialer.is_tls(),
            )
            .into(),
        }
    }

    /// Sends one framed message (see [`frame`]) and returns the response message, unframed.
    /// A stream the server refused unprocessed (RFC 9113 8.7: a server may refuse streams
    /// past a limit it counts differently, as gRPC's C core does) is sent again on a new
    /// one. Dropping the future cancels the stream.
    pub async fn unary(&self, head: &RequestHead, message: &[u8]) -> Result<Bytes, ErrorKind> {
        let shared = &self.handle.shared;
        for attempt in 0..=REFUSED_RETRIES {
            let id = poll_fn(|cx| shared.open_stream(cx, head, message)).await?;
            let mut stream = OpenStream {
                shared,
                id,
                answered: false,
            };
            match poll_fn(|cx| stream.poll_answer(cx)).await {
                Answered::Done(result) => return result,
                // Let the server finish what holds its slots before asking again.
                Answered::Refused if attempt > 0 => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await
                }
                Answered::Refused => tokio::task::yield_now().await,
            }
        }
        Err(ErrorKind::Unavailable)
    }
}

impl Shared {
    fn open_stream(
        &self,
        cx: &mut Context<'_>,
        head: &RequestHead,
        message: &[u8],
    ) -> Poll<Result<u32, ErrorKind>> {
        let mut state = self.state.lock();
        // Set before `ended`, so it covers a connection that ended too.
        if self.unusable.load(Ordering::Acquire) {
            return Poll::Ready(Err(ErrorKind::Unavailable));
        }
        if message.len() > state.peer.initial_window.min(state.peer.max_frame) {
            return Poll::Ready(Err(ErrorKind::Other));
        }
        if state.streams.len() >= state.peer.max_streams || state.send_window < message.len() as i64
        {
            state.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        let id = state.next_stream_id;
        if id > MAX_STREAM_ID {
            self.unusable.store(true, Ordering::Release);
            return Poll::Ready(Err(ErrorKind::Unavailable));
        }
        state.next_stream_id += 2;
        state.send_window -= message.len() as i64;
        let outgoing = &mut state.outgoing;
        put_frame_header(outgoing, head.block.len(), HEADERS, END_HEADERS, id);
        outgoing.extend_from_slice(&head.block);
        put_frame_header(outgoing, message.len(), DATA, END_STREAM, id);
        outgoing.extend_from_slice(message);
        state.streams.insert(id, Stream::default());
        state.request_write();
        Poll::Ready(Ok(id))
    }
}

impl State {
    /// Wakes the connection task to write `outgoing`, once per batch.
    fn request_write(&mut self) {
        if !self.write_requested {
            self.write_requested = true;
            if let Some(task) = &self.connection_task {
                task.wake_by_ref();
            }
        }
    }

    /// Gives stream `id` its answer, unless it has one or is gone (its caller gave up).
    fn answer(&mut self, id: u32, result: Result<Bytes, ErrorKind>, woken: &mut Vec<Waker>) {
        if let Some(stream) = self.streams.get_mut(&id)
            && stream.result.is_none()
        {
            stream.result = Some(result);
            self.uncollected += 1;
            woken.extend(stream.waker.take());
        }
    }

    fn wake_waiting(&mut self, woken: &mut Vec<Waker>) {
        woken.append(&mut self.waiting);
    }
}

/// How a stream ended, for its caller.
enum Answered {
    Done(Result<Bytes, ErrorKind>),
    /// Reset with REFUSED_STREAM: not processed, safe to send again.
    Refused,
}

/// A caller's stream until its answer is taken; dropped before that, it cancels the stream.
struct OpenStream<'a> {
    shared: &'a Shared,
    id: u32,
    answered: bool,
}

impl OpenStream<'_> {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Answered> {
        let mut state = self.shared.state.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Answered::Done(Err(ErrorKind::Unavailable)));
        };
        if let Some(result) = stream.result.take() {
            let refused = stream.refused;
            state.streams.remove(&self.id);
            state.uncollected -= 1;
            self.answered = true;
            // A stream slot freed: a caller held back by the server's limit may go.
            for waker in state.waiting.drain(..) {
                waker.wake();
            }
            return Poll::Ready(if refused {
                Answered::Refused
            } else {
                Answered::Done(result)
            });
        }
        if !stream
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            stream.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = self.shared.state.lock();
        let answered = state
            .streams
            .remove(&self.id)
            .map(|stream| stream.result.is_some());
        if answered == Some(true) {
            // Answered, and the answer never taken.
            state.uncollected -= 1;
        }
        let unfinished = answered == Some(false);
        if unfinished && !state.ended {
            put_frame_header(&mut state.outgoing, 4, RST_STREAM, 0, self.id);
            state.outgoing.put_u32(CANCEL);
            state.request_write();
        }
        for waker in state.waiting.drain(..) {
            waker.wake();
        }
    }
}

/// Owns the socket: reads and dispatches the server's frames, writes what callers queued.
struct ConnectionTask {
    socket: Socket,
    shared: Arc<Shared>,
    read_buffer: BytesMut,
    /// What is being written, taken whole from `State::outgoing`, and how much of it is out.
    writing: Vec<u8>,
    written: usize,
    /// The write was put off by one scheduler turn (see `poll_write`).
    deferred: bool,
    reader: FrameReader,
    /// Callers to wake once the lock is released.
    woken: Vec<Waker>,
}

/// The receiving side's protocol state.
struct FrameReader {
    decoder: hpack::Decoder,
    /// A header block continued in CONTINUATION frames: its stream and END_STREAM flag.
    continuation: Option<(u32, bool)>,
    header_block: Vec<u8>,
    /// DATA received since the last connection WINDOW_UPDATE we sent.
    unacknowledged: usize,
}

impl ConnectionTask {
    fn new(socket: Socket, shared: Arc<Shared>) -> Self {
        Self {
            socket,
            shared,
            read_buffer: BytesMut::with_capacity(READ_BUFFER),
            writing: Vec::with_capacity(READ_BUFFER),
            written: 0,
            deferred: false,
            reader: FrameReader {
                decoder: hpack::Decoder::new(HEADER_TABLE_SIZE),
                continuation: None,
                header_block: Vec::new(),
                unacknowledged: 0,
            },
            woken: Vec::new(),
        }
    }

    async fn run(mut self) {
        let result = poll_fn(|cx| self.poll(cx)).await;
        if let Err(error) = &result {
            tracing::debug!(%error, "gRPC connection ended");
        }
        self.shared.unusable.store(true, Ordering::Release);
        let mut state = self.shared.state.lock();
        state.ended = true;
        let unanswered: Vec<u32> = state.streams.keys().copied().collect();
        for id in unanswered {
            state.answer(id, Err(ErrorKind::Unavailable), &mut self.woken);
        }
        state.wake_waiting(&mut self.woken);
        drop(state);
        self.woken.drain(..).for_each(Waker::wake);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        {
            let mut state = self.shared.state.lock();
            if !state
                .connection_task
                .as_ref()
                .is_some_and(|task| task.will_wake(cx.waker()))
            {
                state.connection_task = Some(cx.waker().clone());
            }
            if state.abandoned && state.streams.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
        if let Poll::Ready(result) = self.poll_read(cx) {
            return Poll::Ready(result);
        }
        self.poll_write(cx)
    }

    /// Reads and handles frames until the socket has no more; Pending when it is drained.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        for _ in 0..READS_PER_TURN {
            if self.read_buffer.capacity() - self.read_buffer.len() < MAX_FRAME_SIZE {
                self.read_buffer.reserve(READ_BUFFER);
            }
            // tokio's poll_read (under poll_read_buf) takes a short read as proof the socket
            // is drained, so it does not ask again only to be told EAGAIN (try_read would:
            // measured 0.10 failed recvfrom per call).
            match tokio_util::io::poll_read_buf(
                Pin::new(&mut self.socket),
                cx,
                &mut self.read_buffer,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ConnectionError::Closed)),
                Poll::Ready(Ok(_)) => self.handle_frames()?,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
            }
        }
        // More to read: let other tasks run first, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Handles every whole frame in the read buffer under one lock.
    fn handle_frames(&mut self) -> Result<(), ConnectionError> {
        let mut state = self.shared.state.lock();
        let result = loop {
            let Some(header) = self.read_buffer.get(..9) else {
                break Ok(());
            };
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream = u31(&header[5..]).expect("a frame header has nine bytes");
            if length > MAX_FRAME_SIZE {
                break Err(ConnectionError::Protocol(
                    "a frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.read_buffer.len() < 9 + length {
                break Ok(());
            }
            let handled = if kind == DATA {
                let frame = self.read_buffer.split_to(9 + length).freeze();
                self.reader
                    .data(&mut state, flags, stream, frame.slice(9..), &mut self.woken)
            } else {
                let handled = self.reader.frame(
                    &mut state,
                    kind,
                    flags,
                    stream,
                    &self.read_buffer[9..9 + length],
                    &mut self.woken,
                );
                bytes::Buf::advance(&mut self.read_buffer, 9 + length);
                handled
            };
            if let Err(error) = handled {
                break Err(error);
            }
        };
        if state.going_away {
            self.shared.unusable.store(true, Ordering::Release);
        }
        drop(state);
        self.woken.drain(..).for_each(Waker::wake);
        result
    }

    /// Writes what callers queued. While callers this task answered have yet to take their
    /// answers, the write waits one scheduler turn: tokio runs a task woken by the running one
    /// next, so without it the connection would write each request alone (measured on h2: 0.67
    /// `writev` per call, against h2load's 0.06); deferred behind the other ready workers, it
    /// writes all their requests at once. With no such caller (a paced request, nobody else
    /// about to send) it writes at once: a deferral is a yield, and tokio wakes a parked thread
    /// for every yield, which under an open model's spread-out requests cost a futex wake and a
    /// thread migration per request.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        loop {
            if self.written == self.writing.len() {
                let mut state = self.shared.state.lock();
                if state.outgoing.is_empty() {
                    state.write_requested = false;
                    drop(state);
                    // A no-op on TCP; TLS sends the records it buffered.
                    return match Pin::new(&mut self.socket).poll_flush(cx) {
                        Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
                        _ => Poll::Pending,
                    };
                }
                if !self.deferred && state.uncollected > 0 {
                    self.deferred = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.deferred = false;
                self.writing.clear();
                self.written = 0;
                std::mem::swap(&mut self.writing, &mut state.outgoing);
                state.write_requested = false;
            }
            match Pin::new(&mut self.socket).poll_write(cx, &self.writing[self.written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(written)) => self.written += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
            }
        }
    }
}

impl FrameReader {
    fn data(
        &mut self,
        state: &mut State,
        flags: u8,
        id: u32,
        payload: Bytes,
        woken: &mut Vec<Waker>,
    ) -> Result<(), ConnectionError> {
        if id == 0 {
            return Err(ConnectionError::Protocol("DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included.
        self.unacknowledged += payload.len();
        if self.unacknowledged >= CONNECTION_WINDOW as usize / 2 {
            put_frame_header(&mut state.outgoing, 4, WINDOW_UPDATE, 0, 0);
            state.outgoing.put_u32(self.unacknowledged as u32);
            state.write_requested = true;
            self.unacknowledged = 0;
        }
        let range = unpadded(flags, &payload)?;
        let Some(stream) = state.streams.get_mut(&id) else {
            return Ok(());
        };
        if stream.result.is_some() {
            return Ok(());
        }
        if !stream.headers_seen || flags & END_STREAM != 0 {
            // DATA before the response headers, or a body with no trailers: no gRPC status.
            state.answer(id, Err(ErrorKind::Unavailable), woken);
            return Ok(());
        }
        stream.body = Some(append_chunk(stream.body.take(), payload.slice(range)));
        Ok(())
    }

    fn frame(
        &mut self,
        state: &mut State,
        kind: u8,
        flags: u8,
        id: u32,
        payload: &[u8],
        woken: &mut Vec<Waker>,
    ) -> Result<(), ConnectionError> {
        if self.continuation.is_some() && kind != CONTINUATION {
            return Err(ConnectionError::Protocol("a header block was interrupted"));
        }
        match kind {
            HEADERS => {
                let mut range = unpadded(flags, payload)?;
                if flags & PRIORITY != 0 {
                    if range.len() < 5 {
                        return Err(ConnectionError::Protocol("HEADERS too short for PRIORITY"));
                    }
                    range.start += 5;
                }
                let end_stream = flags & END_STREAM != 0;
                if flags & END_HEADERS != 0 {
                    let head = read_head(&mut self.decoder, &payload[range])?;
                    on_head(state, id, end_stream, head, woken);
                } else {
                    self.header_block.clear();
                    self.header_block.extend_from_slice(&payload[range]);
                    self.continuation = Some((id, end_stream));
                }
            }
            CONTINUATION => {
                let Some((continued, end_stream)) = self.continuation else {
                    return Err(ConnectionError::Protocol("CONTINUATION without HEADERS"));
                };
                if continued != id {
                    return Err(ConnectionError::Protocol("CONTINUATION on another stream"));
                }
                self.header_block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.continuation = None;
                    let head = read_head(&mut self.decoder, &self.header_block)?;
                    on_head(state, id, end_stream, head, woken);
                }
            }
            RST_STREAM => {
                if payload.len() != 4 {
                    return Err(ConnectionError::Protocol("RST_STREAM length not 4"));
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if code == REFUSED_STREAM
                    && let Some(stream) = state.streams.get_mut(&id)
                {
                    stream.refused = true;
                }
                state.answer(id, Err(ErrorKind::Unavailable), woken);
            }
            SETTINGS if flags & ACK == 0 => {
                if !payload.len().is_multiple_of(6) {
                    return Err(ConnectionError::Protocol(
                        "SETTINGS length not a multiple of 6",
                    ));
                }
                for setting in payload.chunks_exact(6) {
                    let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]])
                        as usize;
                    match u16::from_be_bytes([setting[0], setting[1]]) {
                        SETTINGS_MAX_CONCURRENT_STREAMS => state.peer.max_streams = value,
                        SETTINGS_INITIAL_WINDOW_SIZE => state.peer.initial_window = value,
                        SETTINGS_MAX_FRAME_SIZE => state.peer.max_frame = value,
                        // Our encoder never indexes, so the server's table size does not matter.
                        _ => {}
                    }
                }
                put_frame_header(&mut state.outgoing, 0, SETTINGS, ACK, 0);
                state.write_requested = true;
                state.settings_received = true;
                state.wake_waiting(woken);
            }
            PING if flags & ACK == 0 => {
                if payload.len() != 8 {
                    return Err(ConnectionError::Protocol("PING payload not 8 bytes"));
                }
                put_frame_header(&mut state.outgoing, 8, PING, ACK, 0);
                state.outgoing.extend_from_slice(payload);
                state.write_requested = true;
            }
            GOAWAY => {
                let last = u31(payload).ok_or(ConnectionError::Protocol("GOAWAY too short"))?;
                // Streams after `last` were never processed; the ones before finish normally.
                let refused: Vec<u32> = state
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last)
                    .collect();
                for id in refused {
                    state.answer(id, Err(ErrorKind::Unavailable), woken);
                }
                state.going_away = true;
            }
            WINDOW_UPDATE if id == 0 => {
                let increment =
                    u31(payload).ok_or(ConnectionError::Protocol("WINDOW_UPDATE too short"))?;
                state.send_window += i64::from(increment);
                state.wake_waiting(woken);
            }
            PUSH_PROMISE => {
                return Err(ConnectionError::Protocol(
                    "PUSH_PROMISE although push is disabled",
                ));
            }
            // PRIORITY, stream WINDOW_UPDATE (a request is one frame within the initial
            // window), acknowledgements, unknown types.
            _ => {}
        }
        Ok(())
    }
}

/// What a response header block says about its call.
struct Head {
    ok: bool,
    grpc_status: Option<Result<(), ErrorKind>>,
}

fn read_head(decoder: &mut hpack::Decoder, block: &[u8]) -> Result<Head, hpack::Error> {
    let mut head = Head {
        ok: false,
        grpc_status: None,
    };
    decoder.decode(block, |name, value| match name {
        b":status" => head.ok = value == b"200",
        b"grpc-status" => head.grpc_status = Some(status_result(value)),
        _ => {}
    })?;
    Ok(head)
}

/// Applies a stream's response headers (the first block) or trailers (the second).
fn on_head(state: &mut State, id: u32, end_stream: bool, head: Head, woken: &mut Vec<Waker>) {
    let Some(stream) = state.streams.get_mut(&id) else {
        return;
    };
    if stream.result.is_some() {
        return;
    }
    let result = if !stream.headers_seen {
        stream.headers_seen = true;
        if !head.ok {
            Some(Err(ErrorKind::Unavailable))
        } else if end_stream {
            // Trailers-only: a status and no message, so an error even when the status is OK.
            Some(match head.grpc_status {
                None => Err(ErrorKind::Unavailable),
                Some(status) => status.and(Err(ErrorKind::Other)),
            })
        } else {
            None
        }
    } else {
        Some(match head.grpc_status {
            None => Err(ErrorKind::Unavailable),
            Some(status) => status.and_then(|()| unframe(stream.body.take().unwrap_or_default())),
        })
    };
    if let Some(result) = result {
        state.answer(id, result, woken);
    }
}

/// `chunk` after the body read so far. The first chunk is kept as it came, with no copy: a
/// small body arrives whole in one.
fn append_chunk(body: Option<Bytes>, chunk: Bytes) -> Bytes {
    match body {
        None => chunk,
        Some(head) => [head, chunk].concat().into(),
    }
}

/// The part of a padded frame's payload that is data (RFC 9113 6.1).
fn unpadded(flags: u8, payload: &[u8]) -> Result<std::ops::Range<usize>, ConnectionError> {
    if flags & PADDED == 0 {
        return Ok(0..payload.len());
    }
    match payload.first() {
        Some(&padding) if (padding as usize) < payload.len() => {
            Ok(1..payload.len() - padding as usize)
        }
        _ => Err(ConnectionError::Protocol("padding longer than the frame")),
    }
}

/// A 31-bit field at the start of `bytes` (a stream id, a window increment): four bytes,
/// big-endian, the reserved high bit dropped. `None` when there are fewer than four.
fn u31(bytes: &[u8]) -> Option<u32> {
    let field: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(field) & MAX_STREAM_ID)
}

fn put_frame_header(buffer: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    buffer.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    buffer.push(kind);
    buffer.push(flags);
    buffer.extend_from_slice(&stream.to_be_bytes());
}

/// `message` as one gRPC length-prefixed message: no compression, a 4-byte big-endian length.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    message
        .encode(&mut framed)
        .expect("the buffer was sized to the message");
    framed.freeze()
}

fn unframe(mut framed: Bytes) -> Result<Bytes, ErrorKind> {
    if framed.len() < 5 || framed[0] != 0 {
        // Too short, or compressed: we never ask for compression.
        return Err(ErrorKind::Other);
    }
    let length = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
    if framed.len() != 5 + length {
        return Err(ErrorKind::Other);
    }
    Ok(framed.split_off(5))
}

/// A `grpc-status` value as the call's result.
fn status_result(status: &[u8]) -> Result<(), ErrorKind> {
    match status {
        b"0" => Ok(()),
        // CANCELLED, DEADLINE_EXCEEDED
        b"1" | b"4" => Err(ErrorKind::Timeout),
        b"3" => Err(ErrorKind::InvalidArgument),
        b"14" => Err(ErrorKind::Unavailable),
        _ => Err(ErrorKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let request = sluice_proto::v1::CheckRequest {
            key: "k".into(),
            resource: "r".into(),
            cost: Some(3),
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        let message = unframe(framed.clone()).unwrap();
        assert_eq!(
            <sluice_proto::v1::CheckRequest as prost::Message>::decode(message).unwrap(),
            request
        );
        assert_eq!(
            unframe(framed.slice(..framed.len() - 1)),
            Err(ErrorKind::Other)
        );
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(unframe(compressed.into()), Err(ErrorKind::Other));
    }

    #[test]
    fn thirty_one_bit_fields_drop_the_reserved_bit_and_need_four_bytes() {
        assert_eq!(u31(&[0x80, 0, 0, 3, 0xff]), Some(3));
        assert_eq!(u31(&[0x7f, 0xff, 0xff, 0xff]), Some(MAX_STREAM_ID));
        assert_eq!(u31(&[0, 0, 1]), None);
    }

    #[test]
    fn grpc_status_codes_map_to_error_kinds() {
        let code = |text: &str| status_result(text.as_bytes());
        assert_eq!(code("0"), Ok(()));
        assert_eq!(code("4"), Err(ErrorKind::Timeout));
        assert_eq!(code("3"), Err(ErrorKind::InvalidArgument));
        assert_eq!(code("14"), Err(ErrorKind::Unavailable));
        assert_eq!(code("13"), Err(ErrorKind::Other));
    }
}
