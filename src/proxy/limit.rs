//! Where the request path meets rate limits and budgets: `reserve` once a request is planned
//! (its key, user path and virtual model known), before it goes upstream; `settle` when it
//! ends, with the usage and cost the gateway computed for metrics. A request that never
//! settles gives its reservation back when its context is dropped.
//!
//! Called only when some limit exists (`Limiter::active`); nothing here runs otherwise.

use super::ctx::Ctx;
use crate::app::App;
use crate::limits::{estimate, Estimate, Rules, Who};
use crate::snapshot::Snapshot;

/// Reserves the request's estimate under the limits it falls under. The error is the answer
/// (429 with `Retry-After`, or 503 when shared counters are out of reach and the gateway fails
/// closed); the `x-ratelimit-*` values go into the context either way.
pub async fn reserve(
    app: &App,
    rules: &Rules,
    snap: &Snapshot,
    ctx: &mut Ctx,
) -> Result<(), crate::api_error::ApiError> {
    let who = Who {
        key: ctx.key.as_deref().map(|k| k.name.as_str()),
        user_path: ctx.user_path.as_ref(),
        virtual_model: ctx.virtual_model.as_deref(),
    };
    let limits = rules.matching(&who);
    if limits.is_empty() {
        return Ok(());
    }
    let (input, output) = estimate::tokens(&ctx.body, rules.default_max_tokens);
    let price = ctx
        .plan
        .as_ref()
        .and_then(|p| p.attempts.first())
        .and_then(|a| crate::catalog::price(&snap.providers[a.provider].config, &a.model));
    let micro_usd = price.map_or(0, |p| {
        (input as f64 * p.input_per_mtok + output as f64 * p.output_per_mtok).round() as u64
    });
    let est = Estimate {
        tokens: input + output,
        micro_usd,
    };
    let now = crate::wall_clock::now_secs();
    match app.limiter.reserve(rules, limits, est, now).await {
        Ok(r) => {
            ctx.rate = r.as_ref().map(|r| r.headers);
            ctx.reservation = r;
            Ok(())
        }
        Err(refused) => {
            ctx.rate = Some(*refused.headers);
            Err(*refused.error)
        }
    }
}

/// Settles the request's reservation: the tokens and cost the upstream reported; without a
/// report, a successful answer keeps its estimate and a failed one gives it back.
pub fn settle(ctx: &mut Ctx, cost_usd: Option<f64>) {
    let Some(r) = ctx.reservation.take() else {
        return;
    };
    let ok = ctx.status.is_some_and(|s| s < 400);
    let used = match ctx.usage {
        Some((i, o)) => Estimate {
            tokens: i + o,
            micro_usd: cost_usd.map_or(r.estimate().micro_usd, |c| (c * 1e6).round() as u64),
        },
        None if ok => r.estimate(),
        None => Estimate::default(),
    };
    r.settle(used);
}
