//! A bounded server-sent events reader: bytes in any cut, whole events out as soon as their
//! blank line arrives. Lines end with LF, CRLF or CR (a CRLF split across two chunks is one line
//! end); `data:` lines of an event are joined with LF; comments, `id:` and `retry:` are skipped;
//! a byte-order mark at the very start is ignored. The partial line and the event's data
//! together never exceed the cap: past it the reader reports an overflow and reads no more.

/// An event name is kept up to this many bytes; the names that matter are short.
const MAX_NAME: usize = 64;
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overflow;

pub(super) struct SseReader {
    cap: usize,
    /// The current line, when it spans chunks.
    line: Vec<u8>,
    data: Vec<u8>,
    name: Vec<u8>,
    has_data: bool,
    /// The last byte fed was a CR: an LF right after it ends the same line.
    cr: bool,
    /// Bytes seen so far, up to the length of a byte-order mark.
    seen: usize,
    overflow: bool,
}

impl SseReader {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            line: Vec::new(),
            data: Vec::new(),
            name: Vec::new(),
            has_data: false,
            cr: false,
            seen: 0,
            overflow: false,
        }
    }

    /// Bytes held for events not yet complete.
    pub(super) fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.name.len()
    }

    /// Reads `chunk`, calling `on_event(name, data)` for each event it completes.
    pub(super) fn feed(
        &mut self,
        mut chunk: &[u8],
        on_event: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), Overflow> {
        if self.overflow {
            return Err(Overflow);
        }
        // A byte-order mark may itself arrive cut.
        while self.seen < BOM.len() && !chunk.is_empty() {
            if chunk[0] != BOM[self.seen] {
                // Not a mark: the bytes matched so far were content after all.
                if self.seen > 0 {
                    let head = BOM[..self.seen].to_vec();
                    self.seen = BOM.len();
                    self.feed_lines(&head, on_event)?;
                }
                self.seen = BOM.len();
                break;
            }
            self.seen += 1;
            chunk = &chunk[1..];
        }
        if self.seen < BOM.len() {
            return Ok(());
        }
        self.feed_lines(chunk, on_event)
    }

    fn feed_lines(
        &mut self,
        mut chunk: &[u8],
        on_event: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), Overflow> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.cr && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        self.cr = false;
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let is_cr = chunk[end] == b'\r';
            if self.line.is_empty() {
                self.line_done(&chunk[..end], on_event)?;
            } else {
                self.grow(end)?;
                self.line.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.line);
                let result = self.line_done(&line, on_event);
                self.line = line;
                self.line.clear();
                result?;
            }
            chunk = &chunk[end + 1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.cr = true,
                }
            }
        }
        self.grow(chunk.len())?;
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    fn grow(&mut self, more: usize) -> Result<(), Overflow> {
        if self.buffered().saturating_add(more) > self.cap {
            self.overflow = true;
            self.line = Vec::new();
            self.data = Vec::new();
            return Err(Overflow);
        }
        Ok(())
    }

    fn line_done(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), Overflow> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.grow(value.len() + 1)?;
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name
                    .extend_from_slice(&value[..value.len().min(MAX_NAME)]);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(&[u8], &[u8])) {
        if self.has_data {
            on_event(&self.name, &self.data);
        }
        self.data.clear();
        self.name.clear();
        self.has_data = false;
    }

    /// The body ended: an event whose blank line never came is still delivered (some
    /// providers end the stream right after the last `data:` line).
    pub(super) fn finish(&mut self, on_event: &mut dyn FnMut(&[u8], &[u8])) {
        if self.overflow {
            return;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // The line is already within the cap; only its data can overflow, and the
            // overflow then only drops this last event.
            let _ = self.line_done(&line, on_event);
        }
        self.dispatch(on_event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&[u8]], cap: usize) -> (Vec<(String, String)>, bool) {
        let mut reader = SseReader::new(cap);
        let mut events = Vec::new();
        let mut overflow = false;
        for chunk in chunks {
            let mut on = |name: &[u8], data: &[u8]| {
                events.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(data).into_owned(),
                ));
            };
            overflow |= reader.feed(chunk, &mut on).is_err();
        }
        reader.finish(&mut |name: &[u8], data: &[u8]| {
            events.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(data).into_owned(),
            ));
        });
        (events, overflow)
    }

    #[test]
    fn line_ends_and_cuts() {
        let body: &[u8] =
            b"\xEF\xBB\xBFevent: a\r\ndata: 1\r\n\r\n: comment\ndata:2\ndata: 3\n\nevent:b\rdata: x\r\rdata: tail";
        let expected = vec![
            ("a".to_owned(), "1".to_owned()),
            (String::new(), "2\n3".to_owned()),
            ("b".to_owned(), "x".to_owned()),
            (String::new(), "tail".to_owned()),
        ];
        assert_eq!(read(&[body], 1 << 20), (expected.clone(), false));
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(
                read(&[a, b], 1 << 20),
                (expected.clone(), false),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(read(&bytes, 1 << 20), (expected, false));
    }

    #[test]
    fn not_a_bom() {
        let (events, _) = read(&[b"\xEF", b"data: x\n\n"], 64);
        assert_eq!(events.len(), 0, "a lone 0xEF spoils the first line only");
        let (events, _) = read(&[b"\xEF\xBB", b"\xBFdata: y\n\n"], 64);
        assert_eq!(events, vec![(String::new(), "y".to_owned())]);
    }

    #[test]
    fn the_cap_holds() {
        let (events, overflow) = read(
            &[b"data: 0123456789\n\n", b"data: 01234567890123456789"],
            16,
        );
        assert!(overflow);
        assert_eq!(events, vec![(String::new(), "0123456789".to_owned())]);
        let (_, overflow) = read(&[b"data: 0123\n", b"data: 0123\n", b"data: 0123\n"], 12);
        assert!(overflow, "data lines add up");
    }
}
