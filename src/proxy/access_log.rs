//! The access log: one line per request, text (env_logger's layout) or JSON, written through
//! the log sink without a system call on the request path.

use std::time::Duration;

use super::ctx::Ctx;
use crate::config::settings::Settings;

/// One access-log line per request: never keys or bodies.
pub fn access_log(settings: &Settings, ctx: &Ctx, elapsed: Duration) {
    let requested = ctx.peek.as_ref().map(|p| p.model.as_str()).unwrap_or("");
    let up = ctx.user_path.as_ref().map_or("", |p| p.as_str());
    let status = ctx.status.unwrap_or(0);
    let ms = elapsed.as_secs_f64() * 1000.0;
    if settings.log_json {
        /// Field order is the line's key order.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            request_id: &'a str,
            path: &'a str,
            user_path: &'a str,
            model: &'a str,
            virtual_model: Option<&'a str>,
            served_model: Option<&'a str>,
            attempts: u32,
            status: u16,
            duration_ms: f64,
            stream: bool,
            error: Option<&'static str>,
            error_class: Option<&'static str>,
            hedge: Option<&'static str>,
            tokens_in: Option<u64>,
            tokens_out: Option<u64>,
        }
        let line = Line {
            request_id: &ctx.request_id,
            path: &ctx.path,
            user_path: up,
            model: requested,
            virtual_model: ctx.virtual_model.as_deref(),
            served_model: ctx.served.as_deref(),
            attempts: ctx.attempts.made,
            status,
            duration_ms: (ms * 1000.0).round() / 1000.0,
            stream: ctx.stream,
            error: ctx.error_code,
            error_class: ctx.error_class.map(|c| c.name()),
            hedge: ctx.hedge.map(|h| h.name()),
            tokens_in: ctx.usage.map(|u| u.0),
            tokens_out: ctx.usage.map(|u| u.1),
        };
        crate::log_sink::access(|out| {
            // Serializing plain strings, numbers and booleans cannot fail.
            if let Ok(text) = serde_json::to_string(&line) {
                out.push_str(&text);
            }
        });
    } else {
        crate::log_sink::access(|out| text_line(out, ctx, requested, up, status, elapsed));
    }
}

/// The text access line: `<request id> <path> user_path=.. model=.. virtual=.. served=..
/// attempts=.. status=.. duration_ms=.. tokens=in/out [error=..] [error_class=..] [hedge=..]`,
/// `-` for what is absent.
fn text_line(
    line: &mut String,
    ctx: &Ctx,
    requested: &str,
    up: &str,
    status: u16,
    elapsed: Duration,
) {
    // Written piece by piece: this runs once per request, and the formatter's generic
    // machinery (float formatting above all) cost more than the line itself.
    line.reserve(160 + ctx.request_id.len() + ctx.path.len() + up.len() + 3 * requested.len());
    let mut n = itoa::Buffer::new();
    line.push_str(&ctx.request_id);
    line.push(' ');
    line.push_str(&ctx.path);
    line.push_str(" user_path=");
    line.push_str(or_dash(up));
    line.push_str(" model=");
    line.push_str(or_dash(requested));
    line.push_str(" virtual=");
    line.push_str(ctx.virtual_model.as_deref().unwrap_or("-"));
    line.push_str(" served=");
    line.push_str(ctx.served.as_deref().unwrap_or("-"));
    line.push_str(" attempts=");
    line.push_str(n.format(ctx.attempts.made));
    line.push_str(" status=");
    line.push_str(n.format(status));
    line.push_str(" duration_ms=");
    push_millis(line, elapsed);
    line.push_str(" tokens=");
    match ctx.usage {
        Some((i, o)) => {
            line.push_str(n.format(i));
            line.push('/');
            line.push_str(n.format(o));
        }
        None => line.push('-'),
    }
    if let Some(code) = ctx.error_code {
        line.push_str(" error=");
        line.push_str(code);
    }
    if let Some(class) = ctx.error_class {
        line.push_str(" error_class=");
        line.push_str(class.name());
    }
    if let Some(h) = ctx.hedge {
        line.push_str(" hedge=");
        line.push_str(h.name());
    }
}

/// The value, or `-` when it is empty.
fn or_dash(v: &str) -> &str {
    if v.is_empty() {
        "-"
    } else {
        v
    }
}

/// Milliseconds with three decimals (to the nearest microsecond), as `{:.3}` prints them.
fn push_millis(out: &mut String, d: Duration) {
    let us = (d.as_nanos() + 500) / 1000;
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(us / 1000));
    out.push('.');
    let frac = (us % 1000) as u32;
    if frac < 100 {
        out.push('0');
    }
    if frac < 10 {
        out.push('0');
    }
    out.push_str(n.format(frac));
}

#[cfg(test)]
mod tests {
    use super::push_millis;
    use crate::proxy::ctx::Ctx;
    use std::time::Duration;

    fn text_line(ctx: &Ctx, requested: &str, up: &str, status: u16, d: Duration) -> String {
        let mut line = String::new();
        super::text_line(&mut line, ctx, requested, up, status, d);
        line
    }

    #[test]
    fn text_access_line() {
        let mut ctx = Ctx::new();
        ctx.request_id = "mg-1".into();
        ctx.path = "/v1/chat/completions".into();
        ctx.virtual_model = Some("smart".into());
        ctx.served = Some("openai/gpt-4o".into());
        ctx.attempts.made = 2;
        ctx.usage = Some((12, 34));
        let d = Duration::from_micros(1_234_567);
        assert_eq!(
            text_line(&ctx, "smart", "/team/a", 200, d),
            "mg-1 /v1/chat/completions user_path=/team/a model=smart virtual=smart \
             served=openai/gpt-4o attempts=2 status=200 duration_ms=1234.567 tokens=12/34"
        );
        let mut ctx = Ctx::new();
        ctx.request_id = "mg-2".into();
        ctx.path = "/v1/embeddings".into();
        ctx.error_code = Some("model_not_found");
        assert_eq!(
            text_line(&ctx, "", "", 404, Duration::from_micros(50)),
            "mg-2 /v1/embeddings user_path=- model=- virtual=- served=- attempts=0 status=404 \
             duration_ms=0.050 tokens=- error=model_not_found"
        );
    }

    #[test]
    fn millis_have_three_decimals() {
        for (nanos, text) in [
            (0u64, "0.000"),
            (499, "0.000"),
            (500, "0.001"),
            (1_234_567, "1.235"),
            (12_000_000, "12.000"),
            (987_654_321_000, "987654.321"),
            (5_009_000, "5.009"),
            (5_090_000, "5.090"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_nanos(nanos));
            assert_eq!(s, text, "{nanos} ns");
        }
    }
}
