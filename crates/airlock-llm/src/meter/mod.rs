//! The streaming usage meter: fed an upstream response as it passes, it reads what the provider
//! reports about tokens and model, with state of fixed size whatever the upstream sends.
//!
//! Two layers:
//! - framing: a plain body goes straight to one JSON path scanner (`json.rs`; several documents
//!   in a row, or a top-level array of documents, each count as one event); an SSE body is split
//!   into lines (LF, CRLF or CR, across any chunk boundary), `event:` names are kept (8 bytes:
//!   only `error` matters), and each event's `data:` lines go to the scanner, which starts over
//!   at the blank line that ends the event;
//! - the dialect's rules (`rules.rs`): which paths hold counts, the model, generated text, errors
//!   and finish marks.
//!
//! Each event's counts replace the ones before them field by field (never add): Anthropic's
//! `message_delta`, Gemini's `usageMetadata` and vLLM's continuous usage are all running totals.
//! The usage is *complete* once the dialect's final counts arrived (and, for Chat Completions and
//! Gemini, a finish reason too); only then is it `exact`.
//!
//! When it is not complete (the client left, the upstream broke off or never sent usage), the
//! missing numbers are estimated at about four bytes per token: output from the bytes of
//! generated text that passed, input (with [`Meter::finish_estimated`]) from the request body's
//! size. Such results have `exact: false`.
//!
//! Cost on the hot path: no allocation ever (all state is inline, [`Meter::state_bytes`]), one
//! pass over each frame; inside strings the scanner jumps from quote to quote.

mod json;
mod rules;

use self::json::{Event, Fed, ModelBuf, Scanner};
use self::rules::{Field, Rule, FIELDS};
use crate::api::Api;
use crate::usage::{reconcile, sanitize_model, Reading, Usage, MAX_TOKENS};

/// Bytes of generated text per estimated token: the usual rule of thumb for English text and
/// code with the common BPE tokenizers (a JSON escape such as `\n` counts as its two bytes).
pub const BYTES_PER_TOKEN: u64 = 4;

/// Tokens estimated from a byte count, rounded up so that any text is at least one token.
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN).min(MAX_TOKENS)
}

/// An SSE field name is kept up to this many bytes (`event` plus a byte-order mark).
const FIELD_LEN: usize = 8;
/// An event name is kept up to this many bytes (only `error` matters).
const NAME_LEN: usize = 8;
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Reading the field name.
    Field,
    /// After `data:`, before its optional space.
    DataStart,
    Data,
    /// After `event:`, before its optional space.
    NameStart,
    Name,
    /// A comment or a field that does not matter: skipped to the end of the line.
    Skip,
}

/// The SSE line reader's state.
struct Sse {
    line: Line,
    /// The last byte was a CR: an LF right after it belongs to the same line end.
    cr: bool,
    field: [u8; FIELD_LEN],
    /// Bytes in `field`, or `FIELD_LEN + 1` once longer.
    field_len: u8,
    name: [u8; NAME_LEN],
    name_len: u8,
    /// The current event has had a `data:` line (the next one is joined with an LF).
    has_data: bool,
}

impl Sse {
    const fn new() -> Self {
        Self {
            line: Line::Start,
            cr: false,
            field: [0; FIELD_LEN],
            field_len: 0,
            name: [0; NAME_LEN],
            name_len: 0,
            has_data: false,
        }
    }

    fn field(&self) -> &[u8] {
        let field = self.field.get(..usize::from(self.field_len)).unwrap_or(b"");
        field.strip_prefix(BOM).unwrap_or(field)
    }

    fn named_error(&self) -> bool {
        self.name.get(..usize::from(self.name_len)) == Some(b"error")
    }
}

/// Everything the response has said so far.
#[derive(Clone, Copy)]
struct Totals {
    counts: [u64; FIELDS],
    present: u8,
    model: ModelBuf,
    content_bytes: u64,
    finish_seen: bool,
    complete: bool,
    error: bool,
    anomaly: bool,
}

impl Totals {
    const fn new() -> Self {
        Self {
            counts: [0; FIELDS],
            present: 0,
            model: ModelBuf::new(),
            content_bytes: 0,
            finish_seen: false,
            complete: false,
            error: false,
            anomaly: false,
        }
    }

    /// Takes in one event: its counts replace earlier ones field by field. Its final counts
    /// complete the usage only if the event's document was `whole` (a body or event cut short
    /// may hold some final counts and not others).
    fn record(&mut self, event: &Event, api: Api, named_error: bool, whole: bool) {
        for field in 0..FIELDS {
            if event.present & (1 << field) != 0 {
                self.counts[field] = event.counts[field];
            }
        }
        self.present |= event.present;
        self.model.take_from(&event.model);
        self.content_bytes = self.content_bytes.saturating_add(event.content_bytes);
        self.finish_seen |= event.finish;
        self.error |= event.error || named_error;
        self.anomaly |= event.anomaly;
        if whole && event.last_usage && (self.finish_seen || !rules::needs_finish_marker(api)) {
            self.complete = true;
        }
    }

    fn get(&self, field: Field) -> u64 {
        if self.present & (1 << field as u8) != 0 {
            self.counts[field as usize]
        } else {
            0
        }
    }

    fn has(&self, field: Field) -> bool {
        self.present & (1 << field as u8) != 0
    }
}

/// Turns the provider's counts into Airlock's convention (see [`crate::usage`]).
fn normalize(api: Api, totals: &Totals) -> Usage {
    let get = |field| totals.get(field);
    match api {
        // Anthropic's `input_tokens` leaves out the tokens read from and written to the cache.
        Api::AnthropicMessages => Usage {
            input_tokens: get(Field::Input) + get(Field::CacheRead) + get(Field::CacheWrite),
            output_tokens: get(Field::Output),
            cache_read_tokens: get(Field::CacheRead),
            cache_write_tokens: get(Field::CacheWrite),
            reasoning_tokens: get(Field::Reasoning),
            exact: false,
        },
        // Gemini's `candidatesTokenCount` leaves out the thoughts, which are billed as output;
        // tool results fed back (`toolUsePromptTokenCount`) are billed as input.
        Api::Gemini => Usage {
            input_tokens: get(Field::Input) + get(Field::ToolPrompt),
            output_tokens: get(Field::Output) + get(Field::Reasoning),
            cache_read_tokens: get(Field::CacheRead),
            cache_write_tokens: get(Field::CacheWrite),
            reasoning_tokens: get(Field::Reasoning),
            exact: false,
        },
        // OpenAI's totals already include cached input and reasoning output.
        Api::OpenaiCompletions | Api::OpenaiResponses | Api::None => Usage {
            input_tokens: get(Field::Input),
            output_tokens: get(Field::Output),
            cache_read_tokens: get(Field::CacheRead),
            cache_write_tokens: get(Field::CacheWrite),
            reasoning_tokens: get(Field::Reasoning),
            exact: false,
        },
    }
}

/// Meters one response. See the module documentation.
pub struct Meter {
    api: Api,
    sse: bool,
    rules: &'static [Rule],
    scanner: Scanner,
    framing: Sse,
    /// The event (or document) being read.
    event: Event,
    totals: Totals,
    bytes: u64,
}

impl Meter {
    /// A meter for a response in `api`'s dialect; `sse` when the response is
    /// `text/event-stream`. With [`Api::None`] it reads nothing.
    pub fn new(api: Api, sse: bool) -> Self {
        let rules = rules::rules(api);
        Self {
            api,
            sse,
            rules,
            scanner: Scanner::new(rules, !sse),
            framing: Sse::new(),
            event: Event::new(),
            totals: Totals::new(),
            bytes: 0,
        }
    }

    /// Reads the next piece of the response body, of any size. The bytes are not kept.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.rules.is_empty() {
            return;
        }
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if self.sse {
            self.feed_sse(chunk);
        } else {
            let mut rest = chunk;
            while let Fed::Document(n) = self.scanner.feed(rest, self.rules, &mut self.event) {
                self.totals.record(&self.event, self.api, false, true);
                self.event.clear();
                rest = &rest[n..];
            }
        }
    }

    fn feed_sse(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            let byte = chunk[i];
            if self.framing.cr {
                self.framing.cr = false;
                if byte == b'\n' {
                    i += 1;
                    continue;
                }
            }
            let eol = byte == b'\n' || byte == b'\r';
            match self.framing.line {
                Line::Start if eol => {
                    self.dispatch();
                    self.end_line(byte);
                    i += 1;
                }
                Line::Start if byte == b':' => {
                    self.framing.line = Line::Skip;
                    i += 1;
                }
                Line::Start => {
                    self.framing.field_len = 0;
                    self.framing.line = Line::Field;
                }
                Line::Field => {
                    i += 1;
                    if byte == b':' || eol {
                        let line = match self.framing.field() {
                            b"data" => Line::DataStart,
                            b"event" => {
                                self.framing.name_len = 0;
                                Line::NameStart
                            }
                            _ => Line::Skip,
                        };
                        if line == Line::DataStart {
                            self.data_line();
                        }
                        self.framing.line = line;
                        if eol {
                            self.end_line(byte);
                        }
                    } else {
                        let len = usize::from(self.framing.field_len);
                        match self.framing.field.get_mut(len) {
                            Some(slot) => {
                                *slot = byte;
                                self.framing.field_len += 1;
                            }
                            None => self.framing.field_len = FIELD_LEN as u8 + 1,
                        }
                    }
                }
                Line::DataStart | Line::NameStart if byte == b' ' => {
                    // One space after the colon is part of the syntax, not of the value.
                    self.framing.line = if self.framing.line == Line::DataStart {
                        Line::Data
                    } else {
                        Line::Name
                    };
                    i += 1;
                }
                Line::DataStart => self.framing.line = Line::Data,
                Line::NameStart => self.framing.line = Line::Name,
                Line::Data => {
                    let rest = &chunk[i..];
                    let end = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
                    // One event is one document: the scanner never ends one early here.
                    let _ = self.scanner.feed(&rest[..end], self.rules, &mut self.event);
                    i += end;
                    if let Some(&byte) = chunk.get(i) {
                        self.end_line(byte);
                        i += 1;
                    }
                }
                Line::Name => {
                    i += 1;
                    if eol {
                        self.end_line(byte);
                    } else {
                        let len = usize::from(self.framing.name_len);
                        match self.framing.name.get_mut(len) {
                            Some(slot) => {
                                *slot = byte;
                                self.framing.name_len += 1;
                            }
                            None => self.framing.name_len = NAME_LEN as u8 + 1,
                        }
                    }
                }
                Line::Skip => {
                    let rest = &chunk[i..];
                    match memchr::memchr2(b'\n', b'\r', rest) {
                        Some(n) => {
                            self.end_line(rest[n]);
                            i += n + 1;
                        }
                        None => i = chunk.len(),
                    }
                }
            }
        }
    }

    /// A `data:` line starts: data lines of one event are joined with an LF.
    fn data_line(&mut self) {
        if self.framing.has_data {
            let _ = self.scanner.feed(b"\n", self.rules, &mut self.event);
        }
        self.framing.has_data = true;
    }

    fn end_line(&mut self, byte: u8) {
        self.framing.cr = byte == b'\r';
        self.framing.line = Line::Start;
    }

    /// A blank line: the event is over.
    fn dispatch(&mut self) {
        let whole = self.scanner.is_done();
        self.totals
            .record(&self.event, self.api, self.framing.named_error(), whole);
        self.event.clear();
        self.scanner.reset();
        self.framing.has_data = false;
        self.framing.name_len = 0;
    }

    /// Everything said so far, including the event still being read (a stream may end without
    /// the blank line after its last event; a plain body's document is recorded as it ends, so
    /// one still being read is never whole).
    fn totals_now(&self) -> Totals {
        let mut totals = self.totals;
        let (named_error, whole) = if self.sse {
            (self.framing.named_error(), self.scanner.is_done())
        } else {
            (false, false)
        };
        totals.record(&self.event, self.api, named_error, whole);
        totals
    }

    /// What the upstream reported, as far as it got. When the final usage has not arrived, the
    /// output is at least the estimate from the generated text that passed, the input is what
    /// was reported (0 if nothing was), and `exact` is false.
    pub fn finish(&self) -> Reading {
        self.metered(None)
    }

    /// [`Meter::finish`]'s usage alone, without the model name (which takes an allocation):
    /// for a caller that wants the counts before the request ends.
    pub fn usage(&self) -> Usage {
        self.metered_usage(&self.totals_now(), None)
    }

    /// Like [`Meter::finish`], and when the final usage has not arrived and no input count (or
    /// only 0) was reported, the input is estimated from the request body's size (`request_body_bytes`).
    /// This is what a request event records: never zero for a request that sent anything
    /// (SECURITY #29). Four bytes per token fits text; an image or file sent inline as base64
    /// costs far fewer tokens than its bytes suggest, so this over-estimates such requests (it
    /// only matters when the usage never arrived, and errs towards charging).
    pub fn finish_estimated(&self, request_body_bytes: u64) -> Reading {
        self.metered(Some(request_body_bytes))
    }

    fn metered(&self, request_body_bytes: Option<u64>) -> Reading {
        if self.rules.is_empty() {
            return Reading::default();
        }
        let totals = self.totals_now();
        Reading {
            usage: self.metered_usage(&totals, request_body_bytes),
            model: totals.model.raw().and_then(sanitize_model),
        }
    }

    fn metered_usage(&self, totals: &Totals, request_body_bytes: Option<u64>) -> Usage {
        if self.rules.is_empty() {
            return Usage::default();
        }
        let mut usage = normalize(self.api, totals);
        let mut exact = totals.complete && !totals.anomaly;
        if reconcile(&mut usage) {
            exact = false;
        }
        if !totals.complete {
            exact = false;
            usage.output_tokens = usage
                .output_tokens
                .max(estimate_tokens(totals.content_bytes));
            if let Some(request) = request_body_bytes {
                // A count of 0 is no better than none: an unfinished answer is never free.
                if !totals.has(Field::Input) || usage.input_tokens == 0 {
                    usage.input_tokens = usage.input_tokens.max(estimate_tokens(request));
                }
            }
            reconcile(&mut usage);
        }
        usage.exact = exact;
        usage
    }

    /// The dialect metered.
    pub fn api(&self) -> Api {
        self.api
    }

    /// Whether the final usage has arrived (`exact` may still be false if it did not add up).
    pub fn is_complete(&self) -> bool {
        self.totals_now().complete
    }

    /// Whether the upstream reported an error (an `error` event, an error body, `type: error`).
    pub fn saw_error(&self) -> bool {
        self.totals_now().error
    }

    /// Bytes of generated text seen so far (the estimate's basis).
    pub fn content_bytes(&self) -> u64 {
        self.totals_now().content_bytes
    }

    /// Body bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.bytes
    }

    /// The meter's whole memory: it owns nothing on the heap, so this is its size, the same
    /// whatever it has been fed.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("api", &self.api)
            .field("sse", &self.sse)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}
