//! A bounded, resumable JSON path scanner.
//!
//! It reads a JSON document in pieces of any size, never looks at a byte twice and never needs one
//! again, and keeps a fixed amount of state whatever it is given: one bit per nesting level (up
//! to [`MAX_NEST`] levels, beyond which it only counts brackets until the deep part closes), one
//! byte of path per level for the first [`TRACK`] levels, and short buffers for the one key and
//! the one small string value in flight. Keys longer than any the rules know, and strings the
//! rules do not ask for, are skipped while the structure is still followed, so a 100 MB string
//! costs nothing but the time to pass it.
//!
//! At the start of each value the path to it (the keys and array levels above it) is compared
//! with the dialect's [`Rule`]s; a match says what to do with the value, and the result lands in
//! an [`Event`]: counts, the model name, a byte count of generated text, and error and finish
//! marks. Text inside strings never changes the structure (escapes are followed), so generated
//! text that looks like `"usage": {...}` is only text.

use super::rules::{
    key_id, packed_path, Field, Last, Rule, Target, ANY, FIELDS, MAX_KEY_LEN, MAX_PATH, OTHER,
};
use crate::usage::{MAX_MODEL_LEN, MAX_TOKENS};

/// Nesting levels followed exactly; a document deeper than this is a broken or hostile one, and
/// its deep part is skipped (nothing the rules name lives there).
pub(super) const MAX_NEST: usize = 1024;
/// Levels whose key (or array mark) is remembered: the longest rule path, plus one for a
/// top-level array of documents.
pub(super) const TRACK: usize = MAX_PATH + 1;
/// Raw bytes kept of a model string: room for a name of [`MAX_MODEL_LEN`] characters even if
/// every one of them arrived escaped as two bytes (`\/`).
const RAW_MODEL: usize = 2 * MAX_MODEL_LEN;
/// Bytes kept of an event's `type`, enough for `error`.
const TYPE_LEN: usize = 8;

/// A model string as it arrived, raw (escapes and all), for [`crate::usage::sanitize_model`].
#[derive(Clone, Copy)]
pub(super) struct ModelBuf {
    bytes: [u8; RAW_MODEL],
    len: u16,
    /// A string was given (it may be empty or too long).
    set: bool,
    too_long: bool,
}

impl ModelBuf {
    pub(super) const fn new() -> Self {
        Self {
            bytes: [0; RAW_MODEL],
            len: 0,
            set: false,
            too_long: false,
        }
    }

    fn start(&mut self) {
        self.len = 0;
        self.set = true;
        self.too_long = false;
    }

    fn push(&mut self, span: &[u8]) {
        let len = usize::from(self.len);
        match self.bytes.get_mut(len..len + span.len()) {
            Some(room) if !self.too_long => {
                room.copy_from_slice(span);
                // `len + span.len() <= RAW_MODEL`, which fits in u16.
                self.len = u16::try_from(len + span.len()).unwrap_or(u16::MAX);
            }
            _ => self.too_long = true,
        }
    }

    /// Replaces this name with `other` if `other` was given.
    pub(super) fn take_from(&mut self, other: &ModelBuf) {
        if other.set {
            let len = usize::from(other.len);
            self.bytes[..len].copy_from_slice(&other.bytes[..len]);
            self.len = other.len;
            self.set = true;
            self.too_long = other.too_long;
        }
    }

    /// The raw bytes, or `None` when no name was given or it was too long to keep.
    pub(super) fn raw(&self) -> Option<&[u8]> {
        (self.set && !self.too_long).then(|| &self.bytes[..usize::from(self.len)])
    }
}

/// What one document (an SSE event's data, a body, or an element of a top-level array) said.
#[derive(Clone, Copy)]
pub(super) struct Event {
    pub(super) counts: [u64; FIELDS],
    /// Bit `f` set: `counts[f]` was given.
    pub(super) present: u8,
    /// A count marked [`Last::Yes`] was given.
    pub(super) last_usage: bool,
    pub(super) finish: bool,
    pub(super) error: bool,
    /// A count was negative, fractional, absurd or not a number.
    pub(super) anomaly: bool,
    pub(super) content_bytes: u64,
    pub(super) model: ModelBuf,
}

impl Event {
    pub(super) const fn new() -> Self {
        Self {
            counts: [0; FIELDS],
            present: 0,
            last_usage: false,
            finish: false,
            error: false,
            anomaly: false,
            content_bytes: 0,
            model: ModelBuf::new(),
        }
    }

    /// Forgets everything without rewriting the model buffer's bytes (this runs once per SSE
    /// event, so it stays cheap).
    pub(super) fn clear(&mut self) {
        self.present = 0;
        self.last_usage = false;
        self.finish = false;
        self.error = false;
        self.anomaly = false;
        self.content_bytes = 0;
        self.model.set = false;
        self.model.too_long = false;
        self.model.len = 0;
    }

    fn set_count(&mut self, field: Field, value: u64, last: Last) {
        self.counts[field as usize] = value;
        self.present |= 1 << field as u8;
        if last == Last::Yes {
            self.last_usage = true;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A value must come (after `:` or `,` in an array, or at the top).
    Value,
    /// Just after `[`: a value or `]`.
    FirstValueOrEnd,
    /// Just after `{`: a key or `}`.
    FirstKeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    Colon,
    /// After a value: `,` or the end of its container.
    CommaOrEnd,
    /// Inside a string (a key or a value).
    Str,
    Number,
    Literal,
    /// Inside a container deeper than [`MAX_NEST`]: only brackets and strings are followed.
    Deep,
    /// The document is complete; only whitespace may follow.
    Done,
    /// The bytes are not JSON; everything up to the next reset is ignored.
    Fail,
}

/// What the string in flight is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StrUse {
    Key,
    Skip,
    Model,
    Content,
    Type,
}

/// How a call to [`Scanner::feed`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fed {
    /// Every byte was read.
    All,
    /// A document ended after this many bytes (only with `documents` on): the caller records the
    /// event and feeds the rest.
    Document(usize),
}

/// Number flags.
const NEGATIVE: u8 = 1;
const NOT_INTEGER: u8 = 2;
const TOO_LARGE: u8 = 4;
const DIGIT: u8 = 8;

pub(super) struct Scanner {
    state: State,
    /// Containers open, at most [`MAX_NEST`].
    depth: u32,
    /// Bit `d` set: the container at level `d` is an object.
    objects: [u64; MAX_NEST / 64],
    /// For the first [`TRACK`] levels: the key id of the current member of an object, or
    /// [`ANY`] for an array.
    path: [u8; TRACK],
    /// 1 when the top level is an array whose elements are the documents (a Gemini stream
    /// without `alt=sse`), else 0: paths are read from this level.
    base: u8,
    /// Several documents may follow each other (a plain body), each reported as it ends; off
    /// for SSE, where one event's data is one document.
    documents: bool,
    /// Last keys of the rules: a value whose own key is not among them is not compared.
    last_keys: u64,
    target: Option<Target>,
    string: StrUse,
    escape: bool,
    key: [u8; MAX_KEY_LEN],
    /// Bytes in `key`, or `MAX_KEY_LEN + 1` once the key is longer than any the rules know.
    key_len: u8,
    kind: [u8; TYPE_LEN],
    /// Bytes in `kind`, or `TYPE_LEN + 1` once longer.
    kind_len: u8,
    number: u64,
    number_flags: u8,
    /// Open containers inside the deep part, with its string state.
    deep: u64,
    deep_string: bool,
    deep_escape: bool,
}

impl Scanner {
    pub(super) fn new(rules: &[Rule], documents: bool) -> Self {
        let mut last_keys = 0u64;
        for rule in rules {
            if let Some(&last) = rule.path.last() {
                last_keys |= 1u64.checked_shl(u32::from(last)).unwrap_or(0);
            }
        }
        Self {
            state: State::Value,
            depth: 0,
            objects: [0; MAX_NEST / 64],
            path: [OTHER; TRACK],
            base: 0,
            documents,
            last_keys,
            target: None,
            string: StrUse::Skip,
            escape: false,
            key: [0; MAX_KEY_LEN],
            key_len: 0,
            kind: [0; TYPE_LEN],
            kind_len: 0,
            number: 0,
            number_flags: 0,
            deep: 0,
            deep_string: false,
            deep_escape: false,
        }
    }

    /// Whether the document was read to its end (only meaningful with `documents` off: with it
    /// on, a finished document is reported by [`Scanner::feed`] and the scanner starts over).
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Starts over for a new document.
    pub(super) fn reset(&mut self) {
        self.state = State::Value;
        self.depth = 0;
        self.base = 0;
        self.target = None;
        self.escape = false;
    }

    /// Reads `bytes`. Cost: one pass; strings are crossed with a search for the next quote or
    /// backslash, everything else a byte at a time; a key that lies whole in the piece is named
    /// where it lies (not copied), and compact JSON's `{"`, `,"` and `":` are taken in the same
    /// step as the key; rules are compared once per value whose own key is one the rules end
    /// with, as one number per rule ([`packed_path`]).
    pub(super) fn feed(&mut self, bytes: &[u8], rules: &[Rule], event: &mut Event) -> Fed {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Str => {
                    if self.escape {
                        // The escaped byte is taken as is: it cannot end the string.
                        self.escape = false;
                        self.take(&bytes[i..=i], event);
                        i += 1;
                        continue;
                    }
                    let rest = &bytes[i..];
                    let end = memchr::memchr2(b'"', b'\\', rest);
                    if let Some(n) = end.filter(|&n| {
                        self.string == StrUse::Key && self.key_len == 0 && rest[n] == b'"'
                    }) {
                        // A whole key in this piece, without escapes: named where it lies, and
                        // the colon that follows it in compact JSON taken with it.
                        self.end_key(if n > MAX_KEY_LEN {
                            OTHER
                        } else {
                            key_id(&rest[..n])
                        });
                        i += n + 1;
                        if rest.get(n + 1) == Some(&b':') {
                            self.state = State::Value;
                            i += 1;
                        }
                        continue;
                    }
                    match end {
                        None => {
                            self.take(rest, event);
                            i = bytes.len();
                        }
                        Some(n) => {
                            self.take(&rest[..n], event);
                            i += n + 1;
                            if rest[n] == b'\\' {
                                self.take(b"\\", event);
                                self.escape = true;
                            } else if self.end_string(event) {
                                return Fed::Document(i);
                            }
                        }
                    }
                }
                State::Deep => {
                    i += self.skip_deep(&bytes[i..]);
                }
                State::Fail => return Fed::All,
                _ => {
                    let byte = bytes[i];
                    if self.state == State::Number {
                        if self.number_byte(byte) {
                            i += 1;
                            continue;
                        }
                        // The byte ends the number and is read again below as what follows it.
                        if self.end_number(event) {
                            return Fed::Document(i);
                        }
                        continue;
                    }
                    if self.state == State::Literal {
                        if byte.is_ascii_alphabetic() {
                            i += 1;
                            continue;
                        }
                        if self.value_done() {
                            return Fed::Document(i);
                        }
                        continue;
                    }
                    i += 1;
                    if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                        continue;
                    }
                    if self.structural(byte, rules, event) {
                        return Fed::Document(i);
                    }
                    // A key right after `{` or `,`, as compact JSON has it: started here.
                    if matches!(self.state, State::FirstKeyOrEnd | State::Key)
                        && bytes.get(i) == Some(&b'"')
                    {
                        self.start_key();
                        i += 1;
                    }
                }
            }
        }
        Fed::All
    }

    /// One non-whitespace byte outside strings, numbers and literals. Returns whether a document
    /// ended with it.
    fn structural(&mut self, byte: u8, rules: &[Rule], event: &mut Event) -> bool {
        match (self.state, byte) {
            (State::Value | State::FirstValueOrEnd, _) if byte != b']' => {
                self.begin_value(byte, rules, event);
                false
            }
            (State::FirstValueOrEnd | State::CommaOrEnd, b']')
            | (State::FirstKeyOrEnd | State::CommaOrEnd, b'}') => self.close(byte),
            (State::FirstKeyOrEnd | State::Key, b'"') => {
                self.start_key();
                false
            }
            (State::Colon, b':') => {
                self.state = State::Value;
                false
            }
            (State::CommaOrEnd, b',') => {
                self.state = if self.in_object() {
                    State::Key
                } else {
                    State::Value
                };
                false
            }
            _ => {
                self.state = State::Fail;
                false
            }
        }
    }

    fn in_object(&self) -> bool {
        let level = self.depth as usize - 1;
        self.objects[level / 64] & (1 << (level % 64)) != 0
    }

    /// The target of the value about to start, from the path to it.
    fn lookup(&self, rules: &[Rule]) -> Option<Target> {
        let depth = self.depth as usize;
        let base = usize::from(self.base);
        if depth <= base || depth > TRACK {
            return None;
        }
        let path = &self.path[base..depth];
        let last = path[path.len() - 1];
        if last == ANY || self.last_keys & 1u64.checked_shl(u32::from(last)).unwrap_or(0) == 0 {
            return None;
        }
        let packed = packed_path(path);
        rules
            .iter()
            .find(|rule| rule.packed == packed)
            .map(|rule| rule.target)
    }

    fn begin_value(&mut self, byte: u8, rules: &[Rule], event: &mut Event) {
        let target = self.lookup(rules);
        self.target = target;
        // What the kind of value alone says: an error is anything but null or false; a count
        // that is not a number is an anomaly.
        match (target, byte) {
            (Some(Target::Error), b'n' | b'f') => {}
            (Some(Target::Error), _) => event.error = true,
            (Some(Target::Count(..)), b'{' | b'[' | b'"' | b't' | b'f') => event.anomaly = true,
            (Some(Target::Finish), b'"') => event.finish = true,
            _ => {}
        }
        match byte {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => {
                self.string = match target {
                    Some(Target::Model) => {
                        event.model.start();
                        StrUse::Model
                    }
                    Some(Target::Content) => StrUse::Content,
                    Some(Target::Type) => {
                        self.kind_len = 0;
                        StrUse::Type
                    }
                    _ => StrUse::Skip,
                };
                self.state = State::Str;
            }
            b'-' | b'0'..=b'9' => {
                self.number = 0;
                self.number_flags = if byte == b'-' { NEGATIVE } else { 0 };
                self.state = State::Number;
                if byte != b'-' {
                    self.number_byte(byte);
                }
            }
            b't' | b'f' | b'n' => self.state = State::Literal,
            _ => self.state = State::Fail,
        }
    }

    fn open(&mut self, object: bool) {
        let depth = self.depth as usize;
        if depth >= MAX_NEST {
            self.deep = 1;
            self.deep_string = false;
            self.deep_escape = false;
            self.state = State::Deep;
            return;
        }
        let bit = 1u64 << (depth % 64);
        if object {
            self.objects[depth / 64] |= bit;
        } else {
            self.objects[depth / 64] &= !bit;
        }
        if let Some(slot) = self.path.get_mut(depth) {
            *slot = if object { OTHER } else { ANY };
        }
        if depth == 0 && !object && self.documents {
            self.base = 1;
        }
        self.depth += 1;
        self.state = if object {
            State::FirstKeyOrEnd
        } else {
            State::FirstValueOrEnd
        };
    }

    fn close(&mut self, byte: u8) -> bool {
        if self.depth == 0 || (byte == b'}') != self.in_object() {
            self.state = State::Fail;
            return false;
        }
        self.depth -= 1;
        self.value_done()
    }

    /// A value ended. Returns whether that completed a document the caller should record.
    fn value_done(&mut self) -> bool {
        self.target = None;
        if self.depth == 0 {
            if self.documents {
                self.reset();
            } else {
                self.state = State::Done;
            }
            return self.documents;
        }
        self.state = State::CommaOrEnd;
        self.documents && self.depth == 1 && self.base == 1
    }

    /// Takes bytes of the string in flight.
    fn take(&mut self, span: &[u8], event: &mut Event) {
        match self.string {
            StrUse::Skip => {}
            StrUse::Content => {
                event.content_bytes = event.content_bytes.saturating_add(span.len() as u64);
            }
            StrUse::Key => {
                let len = usize::from(self.key_len);
                match self.key.get_mut(len..len + span.len()) {
                    Some(room) if len <= MAX_KEY_LEN => {
                        room.copy_from_slice(span);
                        self.key_len += span.len() as u8;
                    }
                    _ => self.key_len = MAX_KEY_LEN as u8 + 1,
                }
            }
            StrUse::Model => event.model.push(span),
            StrUse::Type => {
                let len = usize::from(self.kind_len);
                match self.kind.get_mut(len..len + span.len()) {
                    Some(room) => {
                        room.copy_from_slice(span);
                        self.kind_len += span.len() as u8;
                    }
                    None => self.kind_len = TYPE_LEN as u8 + 1,
                }
            }
        }
    }

    fn end_string(&mut self, event: &mut Event) -> bool {
        match self.string {
            StrUse::Key => {
                let len = usize::from(self.key_len);
                self.end_key(if len > MAX_KEY_LEN {
                    OTHER
                } else {
                    key_id(&self.key[..len])
                });
                return false;
            }
            StrUse::Type => {
                if self.kind.get(..usize::from(self.kind_len)) == Some(b"error") {
                    event.error = true;
                }
            }
            StrUse::Model | StrUse::Content | StrUse::Skip => {}
        }
        self.value_done()
    }

    fn start_key(&mut self) {
        self.key_len = 0;
        self.string = StrUse::Key;
        self.state = State::Str;
    }

    /// A key ended: it names the member whose value comes next.
    fn end_key(&mut self, id: u8) {
        if let Some(slot) = self.path.get_mut(self.depth as usize - 1) {
            *slot = id;
        }
        self.state = State::Colon;
    }

    /// Takes one byte of a number; false when the byte is not part of it.
    fn number_byte(&mut self, byte: u8) -> bool {
        match byte {
            b'0'..=b'9' => {
                self.number_flags |= DIGIT;
                if self.number_flags & TOO_LARGE == 0 {
                    self.number = self.number * 10 + u64::from(byte - b'0');
                    if self.number > MAX_TOKENS {
                        self.number_flags |= TOO_LARGE;
                    }
                }
                true
            }
            b'.' | b'e' | b'E' | b'+' | b'-' => {
                self.number_flags |= NOT_INTEGER;
                true
            }
            _ => false,
        }
    }

    fn end_number(&mut self, event: &mut Event) -> bool {
        if let Some(Target::Count(field, last)) = self.target {
            if self.number_flags & (NEGATIVE | NOT_INTEGER | TOO_LARGE) != 0
                || self.number_flags & DIGIT == 0
            {
                event.anomaly = true;
            } else {
                event.set_count(field, self.number, last);
            }
        }
        self.value_done()
    }

    /// Crosses the deep part of a document, following only strings and brackets. Returns the
    /// bytes used.
    fn skip_deep(&mut self, bytes: &[u8]) -> usize {
        for (i, &byte) in bytes.iter().enumerate() {
            if self.deep_string {
                if self.deep_escape {
                    self.deep_escape = false;
                } else if byte == b'\\' {
                    self.deep_escape = true;
                } else if byte == b'"' {
                    self.deep_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.deep_string = true,
                b'{' | b'[' => self.deep = self.deep.saturating_add(1),
                b'}' | b']' => {
                    self.deep -= 1;
                    if self.deep == 0 {
                        // The deep container was a value at level MAX_NEST, never a document.
                        self.value_done();
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::rules;
    use super::*;
    use crate::api::Api;

    fn scan(api: Api, documents: bool, input: &[u8]) -> (Event, Vec<usize>) {
        let rules = rules(api);
        let mut scanner = Scanner::new(rules, documents);
        let mut event = Event::new();
        let mut ends = Vec::new();
        let mut rest = input;
        let mut at = 0;
        while let Fed::Document(n) = scanner.feed(rest, rules, &mut event) {
            at += n;
            ends.push(at);
            rest = &rest[n..];
        }
        (event, ends)
    }

    #[test]
    fn counts_at_exact_paths_only() {
        let body = br#"{"usage":{"prompt_tokens":12,"x":{"prompt_tokens":99},
            "completion_tokens_details":{"reasoning_tokens":3},"completion_tokens":7},
            "choices":[{"usage":{"prompt_tokens":55}}],"prompt_tokens":77}"#;
        let (event, ends) = scan(Api::OpenaiCompletions, true, body);
        assert_eq!(ends, [body.len()]);
        assert_eq!(event.counts[Field::Input as usize], 12);
        assert_eq!(event.counts[Field::Output as usize], 7);
        assert_eq!(event.counts[Field::Reasoning as usize], 3);
        assert_eq!(event.present, 0b10011);
        assert!(event.last_usage && !event.anomaly);
    }

    #[test]
    fn text_that_looks_like_json_is_text() {
        let body = br#"{"choices":[{"delta":{"content":"\"}]}, \"usage\": {\"prompt_tokens\": 5} \\"}}],"model":"m"}"#;
        let (event, _) = scan(Api::OpenaiCompletions, false, body);
        assert_eq!(event.present, 0);
        assert_eq!(event.model.raw(), Some(&b"m"[..]));
        assert_eq!(event.content_bytes, 43);
    }

    #[test]
    fn bad_counts_are_anomalies_not_values() {
        let cases: [&[u8]; 7] = [
            br#"{"usage":{"prompt_tokens":-5}}"#,
            br#"{"usage":{"prompt_tokens":1.5}}"#,
            br#"{"usage":{"prompt_tokens":1e3}}"#,
            br#"{"usage":{"prompt_tokens":"5"}}"#,
            br#"{"usage":{"prompt_tokens":true}}"#,
            br#"{"usage":{"prompt_tokens":{"a":1}}}"#,
            br#"{"usage":{"prompt_tokens":99999999999999999999999}}"#,
        ];
        for body in cases {
            let (event, _) = scan(Api::OpenaiCompletions, true, body);
            assert!(event.anomaly, "{}", String::from_utf8_lossy(body));
            assert_eq!(event.present, 0, "{}", String::from_utf8_lossy(body));
        }
        let (event, _) = scan(
            Api::OpenaiCompletions,
            true,
            br#"{"usage":{"prompt_tokens":null}}"#,
        );
        assert!(!event.anomaly);
    }

    #[test]
    fn top_level_array_elements_are_documents() {
        let body = br#"[{"usageMetadata":{"promptTokenCount":3}}
,{"usageMetadata":{"promptTokenCount":4}}]"#;
        let (event, ends) = scan(Api::Gemini, true, body);
        assert_eq!(ends.len(), 3, "two elements, then the array itself");
        assert_eq!(event.counts[Field::Input as usize], 4);
    }

    #[test]
    fn malformed_input_fails_quietly() {
        for body in [
            &b"[DONE]"[..],
            b"{]",
            b"}",
            b"{\"a\" 1}",
            b"<html>",
            b"{\"a\":1,}x",
        ] {
            let (event, _) = scan(Api::OpenaiCompletions, false, body);
            assert_eq!(event.present, 0);
        }
    }

    #[test]
    fn deep_nesting_is_skipped_with_bounded_state() {
        let deep = MAX_NEST + 500;
        let mut body = b"{\"x\":".to_vec();
        body.extend(std::iter::repeat_n(b'[', deep));
        body.extend(b"\"]]]\\\"\"");
        body.extend(std::iter::repeat_n(b']', deep));
        body.extend(b",\"usage\":{\"prompt_tokens\":5}}");
        let (event, ends) = scan(Api::OpenaiCompletions, true, &body);
        assert_eq!(event.counts[Field::Input as usize], 5);
        assert_eq!(ends, [body.len()]);
    }

    #[test]
    fn long_keys_and_strings_are_skipped() {
        let mut body = b"{\"".to_vec();
        body.extend(std::iter::repeat_n(b'k', 10_000));
        body.extend(b"\":\"");
        body.extend(std::iter::repeat_n(b'v', 100_000));
        body.extend(b"\",\"usage\":{\"prompt_tokens\":5}}");
        let (event, _) = scan(Api::OpenaiCompletions, true, &body);
        assert_eq!(event.counts[Field::Input as usize], 5);
    }
}
