//! The metering stage: the usage and cost of each request to a gateway whose `api` is not
//! `none`, read from the response as it passes (`airlock_llm::Meter`), never delaying a frame.
//!
//! Per request (POST only: the other methods of an LLM API list or fetch, and cost nothing):
//!
//! - **request body**: only for a Chat Completions stream at a provider that honours
//!   `stream_options.include_usage` (`Preset::stream_usage_option`) is the body read ahead
//!   (capped at [`BODY_CAP`]): if the client did not ask for the stream's usage, it is turned on,
//!   and the usage-only chunk it adds at the end is taken out of the stream again, so the client
//!   gets exactly the events it asked for. Every other request streams its body unseen.
//! - **response**: a 2xx response is fed to the meter frame by frame (JSON or SSE); an error
//!   answer costs nothing (providers do not bill them).
//! - **client gone**: if the client leaves before the usage arrived, the rest of the response is
//!   drained (`body::Drains`) so that the usage still counts; without a drain slot, the usage is
//!   estimated from what passed (`exact: false`).
//! - **finish**: the model the upstream reported (else the one requested), the usage, and the
//!   cost from the gateway's model list or the bundled price table (`null` when neither knows
//!   the model), into the request's audit event.

use std::sync::Arc;

use airlock_core::state::{LlmSettings, RequestAuditEvent};
use airlock_core::{Api, Metered, ModelSpec, Price, Usage};
use airlock_llm::Meter;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};

use crate::error::ProxyError;
use crate::shardmap::LazyMap;
use crate::stage::{End, RequestHead, Stage, StageRun};

/// The largest request body read ahead to ask a stream for its usage; a larger one streams
/// unseen and its usage may be estimated.
pub(crate) const BODY_CAP: usize = 4 * 1024 * 1024;

/// The longest partial SSE event held back while looking for the usage-only chunk to drop;
/// beyond it the filter gives up and passes everything through.
const MAX_HELD: usize = 64 * 1024;

/// Requests past this many input tokens are priced at a model's long-context tier, where it has
/// one (Gemini, Claude's 1M context).
const LONG_CONTEXT: u64 = 200_000;

/// Models remembered per shard of a provider's price cache (16 shards): model names come from
/// clients and upstreams, so the cache is bounded; past it a price is looked up each time.
const PRICES_PER_SHARD: usize = 64;

/// Bundled-table prices already looked up, by provider (operator-chosen, few), then by model:
/// short requests, long-context requests.
type TablePrices = LazyMap<String, [LazyMap<String, Option<Price>>; 2]>;

static TABLE_PRICES: std::sync::LazyLock<TablePrices> = std::sync::LazyLock::new(LazyMap::new);

/// The bundled table's price of `model` at `provider` for a request of `input_tokens`,
/// remembered for the process's life per model and tier: a lookup runs the table's name matching
/// and its calculator three times (microseconds), and metering and every limit estimate need one
/// per request. Shared by the meter and the limits' estimates.
pub(crate) fn table_price(provider: &str, model: &str, input_tokens: u64) -> Option<Price> {
    let long = input_tokens > LONG_CONTEXT;
    let lookup = || airlock_llm::price_for(provider, model, if long { input_tokens } else { 1 });
    let tiers = TABLE_PRICES.get_or_insert(provider, || {
        (provider.to_owned(), [LazyMap::new(), LazyMap::new()])
    });
    let cache = &tiers[usize::from(long)];
    if let Some(price) = cache.get(model) {
        return *price;
    }
    if cache.shard_len(model) >= PRICES_PER_SHARD {
        return lookup();
    }
    *cache.get_or_insert(model, || (model.to_owned(), lookup()))
}

/// The price of `model` for a gateway: its own model list first, then the bundled table for
/// its provider ([`table_price`]); `None` when neither knows it.
pub(crate) fn resolve_price(
    models: &[ModelSpec],
    provider: Option<&str>,
    model: &str,
    input_tokens: u64,
) -> Option<Price> {
    airlock_llm::listed_price(models, model).or_else(|| table_price(provider?, model, input_tokens))
}

/// One gateway config's metering: its dialect, provider and models.
pub(crate) struct MeterStage(Arc<Gateway>);

struct Gateway {
    api: Api,
    provider: Option<Arc<str>>,
    models: Box<[ModelSpec]>,
    ask_stream_usage: bool,
}

impl MeterStage {
    pub(crate) fn new(llm: &LlmSettings) -> MeterStage {
        let preset = llm.provider.as_deref().and_then(airlock_llm::preset);
        MeterStage(Arc::new(Gateway {
            api: llm.api,
            provider: llm.provider.as_deref().map(Arc::from),
            models: llm.models.clone().into(),
            ask_stream_usage: llm.api == Api::OpenaiCompletions
                && preset.is_some_and(|p| p.stream_usage_option),
        }))
    }
}

impl Gateway {
    /// The price of `model`: the gateway's own list first, then the bundled table.
    fn price(&self, model: &str, input_tokens: u64) -> Option<Price> {
        resolve_price(&self.models, self.provider.as_deref(), model, input_tokens)
    }
}

impl Stage for MeterStage {
    fn start(&self, head: &RequestHead<'_>) -> Option<Box<dyn StageRun>> {
        if head.method != Method::POST {
            return None;
        }
        let requested = match self.0.api {
            Api::Gemini => airlock_llm::model_from_gemini_path(head.path).map(str::to_owned),
            _ => None,
        };
        Some(Box::new(MeterRun {
            gateway: self.0.clone(),
            requested,
            meter: None,
            answered: None,
            filter: None,
        }))
    }
}

/// One request's metering.
struct MeterRun {
    gateway: Arc<Gateway>,
    /// The model the request named.
    requested: Option<String>,
    meter: Option<Meter>,
    /// The upstream's status, once it answered.
    answered: Option<StatusCode>,
    /// Takes the usage-only chunk out of a stream whose usage Airlock asked for.
    filter: Option<UsageChunkFilter>,
}

impl StageRun for MeterRun {
    fn body_cap(&self) -> Option<usize> {
        self.gateway.ask_stream_usage.then_some(BODY_CAP)
    }

    fn request_body(&mut self, body: Option<&mut Bytes>) -> Result<(), ProxyError> {
        let Some(body) = body else {
            return Ok(());
        };
        let Ok(info) = airlock_llm::parse_request(self.gateway.api, body) else {
            // Not a JSON object: the upstream will say so.
            return Ok(());
        };
        self.requested = info.model;
        if info.stream && !info.include_usage {
            if let Some(asked) = airlock_llm::with_include_usage(body) {
                *body = Bytes::from(asked);
                self.filter = Some(UsageChunkFilter::default());
            }
        }
        Ok(())
    }

    fn response_head(&mut self, head: &mut http::response::Parts) {
        self.answered = Some(head.status);
        if !head.status.is_success() {
            self.filter = None;
            return;
        }
        let sse = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !sse {
            self.filter = None;
        }
        self.meter = Some(Meter::new(self.gateway.api, sse));
    }

    fn frame(&mut self, data: &mut Bytes) {
        if let Some(meter) = &mut self.meter {
            meter.feed(data);
        }
        if let Some(filter) = &mut self.filter {
            if !filter.pass(data) {
                self.filter = None;
            }
        }
    }

    fn holds(&self) -> bool {
        self.filter.as_ref().is_some_and(|f| !f.held.is_empty())
    }

    fn end(&mut self) -> Option<Bytes> {
        let held = self.filter.as_mut().map(|f| std::mem::take(&mut f.held))?;
        (!held.is_empty()).then(|| held.freeze())
    }

    fn wants_drain(&self) -> bool {
        self.meter.as_ref().is_some_and(|m| !m.is_complete())
    }

    fn usage(&self) -> Option<(u64, u64)> {
        let meter = self.meter.as_ref().filter(|m| m.is_complete())?;
        let usage = meter.usage();
        Some((usage.input_tokens, usage.output_tokens))
    }

    fn finish(&mut self, end: End, event: &mut RequestAuditEvent) {
        let request_bytes = u64::try_from(event.bytes_in).unwrap_or(0);
        let (model, usage) = match (&self.meter, self.answered) {
            (Some(meter), _) => {
                let reading = if meter.is_complete() {
                    meter.finish()
                } else {
                    meter.finish_estimated(request_bytes)
                };
                (reading.model, reading.usage)
            }
            // An error answer is not billed.
            (None, Some(_)) => (
                None,
                Usage {
                    exact: true,
                    ..Usage::default()
                },
            ),
            // No answer: the upstream may have read (and billed) the request before the
            // client or the connection went away.
            (None, None) => (
                None,
                Usage {
                    input_tokens: match end {
                        End::ClientGone | End::Drained => {
                            airlock_llm::meter::estimate_tokens(request_bytes)
                        }
                        End::Complete | End::Failed => 0,
                    },
                    exact: !matches!(end, End::ClientGone | End::Drained),
                    ..Usage::default()
                },
            ),
        };
        let model = model.or_else(|| self.requested.take());
        let cost_nanos = match &model {
            Some(model) => self
                .gateway
                .price(model, usage.input_tokens)
                .map(|p| p.cost_nanos(&usage)),
            // Nothing used costs nothing, whatever the model.
            None if usage.total_tokens() == 0 => Some(0),
            None => None,
        };
        event.llm = Some(Metered {
            provider: self.gateway.provider.as_deref().map(str::to_owned),
            model,
            usage,
            cost_nanos,
        });
    }
}

/// Takes the usage-only chunk out of a Chat Completions stream. Whole events pass at once; the
/// tail of a frame that ends inside an event is held until the rest of that event arrives (the
/// client could not use half an event anyway), so no complete event is ever delayed.
#[derive(Default)]
struct UsageChunkFilter {
    held: BytesMut,
}

impl UsageChunkFilter {
    /// Rewrites `data` to the complete events it finishes, minus the usage-only chunk; `false`
    /// when the filter gives up (an event larger than [`MAX_HELD`]) and has put back what it held.
    fn pass(&mut self, data: &mut Bytes) -> bool {
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(data);
        let Some(end) = last_event_end(&all) else {
            if all.len() > MAX_HELD {
                *data = all.freeze();
                return false;
            }
            self.held = all;
            *data = Bytes::new();
            return true;
        };
        let tail = all.split_off(end);
        self.held = tail;
        let whole = all.freeze();
        if memchr_pair(&whole, b"\"usage\"").is_none() {
            *data = whole;
            return true;
        }
        let mut kept = BytesMut::with_capacity(whole.len());
        for event in split_events(&whole) {
            if !event_is_usage_only(event) {
                kept.extend_from_slice(event);
            }
        }
        *data = kept.freeze();
        true
    }
}

/// The end (exclusive) of the last complete SSE event in `bytes`: just after a blank line.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' && bytes[i + 1] == b'\n' {
            end = Some(i + 2);
            i += 2;
        } else if bytes[i..].starts_with(b"\r\n\r\n") {
            end = Some(i + 4);
            i += 4;
        } else {
            i += 1;
        }
    }
    end
}

/// The events of `bytes` (each with its blank line), which ends at an event's end.
fn split_events(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = last_event_end_first(rest).unwrap_or(rest.len());
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(event)
    })
}

/// The end of the first complete event in `bytes`.
fn last_event_end_first(bytes: &[u8]) -> Option<usize> {
    let lf = memchr_pair(bytes, b"\n\n").map(|i| i + 2);
    let crlf = memchr_pair(bytes, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn memchr_pair(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether one SSE event's data is the usage-only chunk.
fn event_is_usage_only(event: &[u8]) -> bool {
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    airlock_llm::is_usage_only_chunk(&data)
}
