//! Raw HTTP/2 (RFC 9113) for clients that misbehave on purpose.

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The client preface and an empty SETTINGS frame.
pub fn hello() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// A request's HEADERS (HPACK literals without indexing; names and values under 127 bytes).
pub fn request(stream: u32, method: &str, path: &str, grpc: bool, end_stream: bool) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
    ];
    if grpc {
        fields.extend([("content-type", "application/grpc"), ("te", "trailers")]);
    } else {
        fields.push(("content-type", "application/json"));
    }
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        for s in [name, value] {
            block.push(u8::try_from(s.len()).unwrap());
            block.extend_from_slice(s.as_bytes());
        }
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// A unary or server-streaming gRPC call with an empty request message.
pub fn grpc_call(stream: u32, path: &str) -> Vec<u8> {
    let mut out = request(stream, "POST", path, true, false);
    out.extend(frame(DATA, END_STREAM, stream, &[0; 5]));
    out
}

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A SETTINGS parameter of this (SETTINGS) frame.
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.payload.chunks_exact(6).find_map(|p| {
            (u16::from_be_bytes([p[0], p[1]]) == id)
                .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
        })
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        self.payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The next frame, or `None` at end of stream.
pub async fn read(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }))
}
