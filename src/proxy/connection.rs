//! A client connection and each request on it, from its header to the connection's reuse: the
//! gateway is its own HTTP application on Pingora's server session. Pingora's proxy framework (`pingora_proxy::HttpProxy`)
//! is not used: the gateway answers every request in its request phase and opens its upstream
//! connections itself (`exchange`), so the framework's upstream phases, cache and modules never
//! ran, yet their state machine sized every open connection's future (13.4 KiB, of which the
//! never-entered upstream phases were 10.8; BENCHMARKS.md, "Open streams").
//!
//! The accept loop (`accept`) hands over a connection; for each request on it (the first, then
//! each kept-alive one that follows) this reads the request header and runs the phases in order:
//! - `request_filter` answers the request (local routes, admin, or the upstream exchange);
//! - `fail_to_proxy` answers what it returned as an error, when nothing was written yet;
//! - `logging` records health windows, metrics and the access line.
//!
//! The connection carries a next request only when the answer ended cleanly.

use std::sync::Arc;

use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;

use super::ctx::Ctx;
use super::respond::ApiError;
use super::{Gateway, Session};

/// Idle seconds a kept-alive connection waits for its next request (Pingora's default).
const KEEPALIVE_SECONDS: u64 = 60;

impl Gateway {
    /// Serves a client connection: its first request, then each kept-alive one that follows.
    /// This future is the whole of what the connection's task holds (`accept`), so a request's
    /// state is made inside `serve`, and this future keeps none of its own beside it.
    pub async fn connection(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let mut next = Some((stream, None));
        while let Some((stream, settings)) = next {
            next = self
                .serve(stream, settings, shutdown)
                .await
                .map(ReusedHttpStream::consume);
        }
    }

    /// One request on the connection; its stream back when it may carry the next. `settings`
    /// are the ones the previous request on the connection left (none for its first).
    async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        settings: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut session = Session::new_http1(stream);
        match settings {
            Some(settings) => settings.apply_to_session(&mut session),
            // A server that is draining answers this request and closes the connection.
            None => session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECONDS)),
        }
        if !read_header(&mut session, shutdown).await {
            return None;
        }
        if *shutdown.borrow() {
            // The server is draining: this request is answered, the connection then closed.
            session.set_keepalive(None);
        }
        let mut ctx = Box::new(Ctx::new());
        let reuse = match self.request_filter(&mut session, &mut ctx).await {
            Ok(()) => {
                self.logging(&mut session, None, &mut ctx);
                true
            }
            Err(e) => {
                // Boxed: failures are rare, and in line this would size every request's future.
                let reuse = Box::pin(self.fail_to_proxy(&mut session, &e, &mut ctx)).await;
                self.logging(&mut session, Some(&e), &mut ctx);
                session.on_proxy_failure(e);
                reuse
            }
        };
        // The request is over (`IN_FLIGHT` counts live contexts) before the connection waits
        // for its next one.
        drop(ctx);
        if !reuse {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        // Boxed: finishing (draining what is left of the request body) is a 3.7 KiB future, and
        // in line it would size the future every open stream holds.
        Box::pin(session.finish())
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }
}

/// Reads the next request's header. False when there is none to answer: the client closed an
/// idle connection, the server began to drain while the connection waited, or the header could
/// not be read (a malformed one is answered with a 400 first). A `CONNECT` is refused with a
/// 405: its message framing is not an HTTP request's. The rare ways out are boxed where they
/// are awaited, so that they do not size every request's future.
async fn read_header(session: &mut Session, shutdown: &ShutdownWatch) -> bool {
    let mut draining = shutdown.clone();
    let read = tokio::select! {
        // Bytes already buffered are a request to answer, drain or not.
        biased;
        r = session.read_request() => r,
        _ = draining.wait_for(|d| *d) => return false,
    };
    match read {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                let err = ApiError::invalid_request(
                    "bad_request",
                    "the request's HTTP header could not be read",
                );
                Box::pin(refuse(session, err)).await;
            } else {
                Box::pin(session.shutdown()).await;
            }
            return false;
        }
    }
    if session.req_header().method == http::Method::CONNECT {
        let err = ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            "CONNECT is not served",
        );
        Box::pin(refuse(session, err)).await;
        return false;
    }
    true
}

/// Answers `err` (the OpenAI envelope: no route, so no dialect, is known yet) and closes.
async fn refuse(session: &mut Session, err: ApiError) {
    let mut header = Session::generate_error(err.status);
    let body = Bytes::from(err.openai_body());
    let framed = header
        .set_content_length(body.len())
        .and_then(|()| header.insert_header(http::header::CONTENT_TYPE, "application/json"));
    if framed.is_ok() {
        // The client may be gone already; nothing else is owed to it.
        let _ = session.write_error_response(header, body).await;
    }
    session.shutdown().await;
}
