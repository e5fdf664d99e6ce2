//! Answers that leave part of the request unread end the connection, and say so. hyper does not
//! reuse a connection whose request body was not read to its end, but it does not tell the client
//! either, and a keep-alive client would send its next request into a closed socket. So every
//! answer given before the body's end (413, an early refusal, 408 on a stalled body) carries
//! `Connection: close`, and so does every 413 and 408. The same holds for a request head over [`MAX_HEAD_BYTES`]: it is refused
//! here with 431, since hyper's own bound on its read buffer lets heads of up to about twice that
//! through.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Largest request head accepted: request line and headers, as written on the wire.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The size of a request head as the client wrote it (request line, headers, line ends).
fn head_bytes(req: &Request) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n".len() + 1;
    line + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() + 2
}

/// The middleware: 431 for a head over the limit; `Connection: close` on any answer given before
/// the request body was read to its end.
pub async fn close_if_unread(req: Request, next: Next) -> Response {
    if head_bytes(&req) > MAX_HEAD_BYTES {
        let mut res = ApiError::new(431, "request header fields too large").into_response();
        *res.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
    let req = req.map(|inner| Body::new(Watched { inner, read: read.clone() }));
    let mut res = next.run(req).await;
    // 413 and 408 close even when the body happened to arrive whole: the client sent too much or
    // too slowly, and another request on the same connection is not wanted.
    let refused = matches!(res.status(), StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT);
    if refused || !read.load(Ordering::Acquire) {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// A request body that records when it has been read to its end.
struct Watched {
    inner: Body,
    /// Shared with the middleware, which reads it once the answer is ready.
    read: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
