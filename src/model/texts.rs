//! An event's texts: one buffer and each text's span of it (see [`super::PriceEvent`]).

/// Where each text of an event sits in [`Texts`]' buffer, by field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text {
    EventId,
    EventName,
    Venue,
    Source,
    Section,
    Row,
    Seat,
    ListingId,
    ListingUrl,
    DeliveryMethod,
    SellerNotes,
}

const TEXTS: usize = 11;

/// A text's place in the buffer; `start == u32::MAX` for an absent optional text.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

const ABSENT: Span = Span {
    start: u32::MAX,
    len: 0,
};

/// An event's texts: one buffer, and each text's span of it.
#[derive(Clone)]
pub(crate) struct Texts {
    buf: Box<str>,
    spans: [Span; TEXTS],
}

impl Texts {
    /// Texts read from `record`: each text that is a slice of `record` becomes a span of the
    /// record's copy (no further copy), any other (an unescaped or converted text) is appended.
    /// `texts` is indexed by [`Text`].
    pub(crate) fn build(record: &str, texts: [Option<&str>; TEXTS]) -> Self {
        // Sized for the record: a parsed record's texts all lie inside it, so its buffer is
        // never grown (only the tape path's and a built event's are).
        let mut buf = String::with_capacity(record.len());
        buf.push_str(record);
        let mut spans = [ABSENT; TEXTS];
        for (span, text) in spans.iter_mut().zip(texts) {
            let Some(text) = text else { continue };
            let start = offset_in(record, text).unwrap_or_else(|| {
                buf.push_str(text);
                buf.len() - text.len()
            });
            // Records are capped far below 4 GiB; a text beyond would read as empty.
            *span = match (u32::try_from(start), u32::try_from(text.len())) {
                (Ok(start), Ok(len)) if start != u32::MAX => Span { start, len },
                _ => Span { start: 0, len: 0 },
            };
        }
        Self {
            buf: buf.into_boxed_str(),
            spans,
        }
    }

    #[inline]
    pub(super) fn get(&self, t: Text) -> Option<&str> {
        let span = self.spans[t as usize];
        if span.start == u32::MAX {
            return None;
        }
        let start = span.start as usize;
        // Spans are made at character boundaries of this buffer; `get` keeps any other value
        // from panicking.
        Some(self.buf.get(start..start + span.len as usize).unwrap_or_default())
    }

    #[inline]
    pub(super) fn req(&self, t: Text) -> &str {
        self.get(t).unwrap_or_default()
    }
}

/// Where `text` starts inside `record`, if it is a slice of it.
#[inline]
fn offset_in(record: &str, text: &str) -> Option<usize> {
    let start = (text.as_ptr() as usize).wrapping_sub(record.as_ptr() as usize);
    (start <= record.len() && text.len() <= record.len() - start).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_read_from_a_record_are_spans_of_its_copy_and_others_are_appended() {
        let record = r#"{"event_id": "e1", "venue": "Arena"}"#;
        let (id, venue) = (&record[14..16], &record[29..34]);
        let converted = String::from("7");
        let texts = Texts::build(
            record,
            [
                Some(id),
                Some(""),
                Some(venue),
                Some("stubhub"),
                Some(id),
                None,
                Some(&converted),
                None,
                None,
                None,
                None,
            ],
        );
        assert_eq!(texts.req(Text::EventId), "e1");
        assert_eq!(texts.req(Text::Venue), "Arena");
        assert_eq!(texts.req(Text::Section), "e1");
        assert_eq!(texts.req(Text::Source), "stubhub");
        assert_eq!(texts.req(Text::Seat), "7");
        assert_eq!(texts.get(Text::EventName), Some(""));
        assert_eq!(texts.get(Text::Row), None);
        assert_eq!(texts.req(Text::Row), "");
        assert_eq!(texts.get(Text::ListingId), None);
        // The record once, then only what was not a slice of it.
        assert_eq!(&*texts.buf, format!("{record}stubhub7"));
    }
}
