//! Two answers to the same call, compared byte for byte: status, `grpc-message`, trailers
//! and every response message. `grpcproxy replay` compares a replayed call with its
//! recording; a mirror ([`crate::policy::MirrorPolicy`]) compares the shadow's answer
//! with the primary's.
//!
//! ```
//! use grpcproxy::compare::{differences, Answer, Message};
//!
//! let primary = Answer::new(0, vec![Message::whole(false, "abc".into())]);
//! let shadow = Answer::new(0, vec![Message::whole(false, "abd".into())]);
//! let found = differences(&primary, &shadow);
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].first_byte(), Some(2));
//! assert_eq!(
//!     found[0].describe("primary", "mirror"),
//!     "response message 0: 3 bytes, first difference at byte 2 (primary 0x63, mirror 0x64)"
//! );
//! ```

use bytes::Bytes;

/// Response messages whose differences are listed; beyond, only counted.
const LISTED: usize = 5;

/// One response message: its compressed flag and bytes. `length` is its full length on
/// the wire; `payload` may hold only a prefix of it (a recording that cut it), and then
/// only that prefix is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The compressed flag of its 5-byte prefix.
    pub compressed: bool,
    /// Its bytes (or a prefix of them).
    pub payload: Bytes,
    /// Its full length on the wire.
    pub length: u32,
}

impl Message {
    /// A message held whole.
    pub fn whole(compressed: bool, payload: Bytes) -> Self {
        let length = payload.len() as u32;
        Self {
            compressed,
            payload,
            length,
        }
    }
}

/// How a call ended and what it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The gRPC status code.
    pub code: i32,
    /// `grpc-message` as sent (percent-encoded), empty if none.
    pub message: String,
    /// The trailers other than `grpc-status` and `grpc-message`, if they are to be
    /// compared: (name, value), in any order.
    pub trailers: Option<Vec<(String, Bytes)>>,
    /// The response messages, in order.
    pub messages: Vec<Message>,
}

impl Answer {
    /// An answer with status `code`, no `grpc-message`, trailers not compared.
    pub fn new(code: i32, messages: Vec<Message>) -> Self {
        Self {
            code,
            messages,
            ..Self::default()
        }
    }
}

/// One way two answers differ; in each, `expected` is the first answer's side and
/// `actual` the second's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "the fields are named for the sides, described above"
)]
pub enum Difference {
    /// The status codes differ (`actual_message`: the second answer's `grpc-message`).
    Status {
        expected: i32,
        actual: i32,
        actual_message: String,
    },
    /// Same status, different `grpc-message`.
    GrpcMessage { expected: String, actual: String },
    /// A trailer (`name`) that is missing on one side or has another value.
    Trailer {
        name: String,
        expected: Option<Bytes>,
        actual: Option<Bytes>,
    },
    /// The numbers of response messages differ.
    MessageCount { expected: usize, actual: usize },
    /// Response message `index` differs, as `how` says.
    Message {
        index: usize,
        how: MessageDifference,
    },
    /// Further response messages differ (not listed).
    MoreMessages(usize),
}

/// How one response message differs (`expected`: the first answer's side).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "the fields are named for the sides, described above"
)]
pub enum MessageDifference {
    /// The compressed flags differ.
    Compressed { expected: bool, actual: bool },
    /// The lengths differ.
    Length { expected: u32, actual: u32 },
    /// Same `length`; the first differing byte, at offset `at` of the message.
    Byte {
        length: u32,
        at: usize,
        expected: u8,
        actual: u8,
    },
}

impl Difference {
    /// The offset of the first differing byte inside a response message, when that is
    /// how the answers differ.
    pub fn first_byte(&self) -> Option<usize> {
        match self {
            Difference::Message {
                how: MessageDifference::Byte { at, .. },
                ..
            } => Some(*at),
            _ => None,
        }
    }

    /// The difference in words, naming the two answers `expected` and `actual` (e.g.
    /// "recorded" and "replayed").
    pub fn describe(&self, expected_name: &str, actual_name: &str) -> String {
        let (e, a) = (expected_name, actual_name);
        match self {
            Difference::Status {
                expected,
                actual,
                actual_message,
            } => format!(
                "status: {e} {}, {a} {} {actual_message:?}",
                code_name(*expected),
                code_name(*actual)
            ),
            Difference::GrpcMessage { expected, actual } => {
                format!("grpc-message: {e} {expected:?}, {a} {actual:?}")
            }
            Difference::Trailer {
                name,
                expected,
                actual,
            } => format!(
                "trailer {name}: {e} {}, {a} {}",
                value_text(expected.as_ref()),
                value_text(actual.as_ref())
            ),
            Difference::MessageCount { expected, actual } => {
                format!("response messages: {e} {expected}, {a} {actual}")
            }
            Difference::Message { index, how } => {
                let how = match how {
                    MessageDifference::Compressed { expected, actual } => {
                        format!("compressed flag: {e} {expected}, {a} {actual}")
                    }
                    MessageDifference::Length { expected, actual } => {
                        format!("length: {e} {expected} bytes, {a} {actual} bytes")
                    }
                    MessageDifference::Byte {
                        length,
                        at,
                        expected,
                        actual,
                    } => format!(
                        "{length} bytes, first difference at byte {at} ({e} {expected:#04x}, {a} {actual:#04x})"
                    ),
                };
                format!("response message {index}: {how}")
            }
            Difference::MoreMessages(more) => format!("{more} more response messages differ"),
        }
    }
}

/// Every way `actual` differs from `expected` (empty: they match): the status code (else
/// `grpc-message`), the trailers when both sides hold them, the number of response
/// messages, and each message's compressed flag, length and bytes (the first
/// [`LISTED`] differing messages, the rest counted).
pub fn differences(expected: &Answer, actual: &Answer) -> Vec<Difference> {
    let mut found = Vec::new();
    if expected.code != actual.code {
        found.push(Difference::Status {
            expected: expected.code,
            actual: actual.code,
            actual_message: actual.message.clone(),
        });
    } else if expected.message != actual.message {
        found.push(Difference::GrpcMessage {
            expected: expected.message.clone(),
            actual: actual.message.clone(),
        });
    }
    if let (Some(e), Some(a)) = (&expected.trailers, &actual.trailers) {
        found.extend(trailer_differences(e, a));
    }
    if expected.messages.len() != actual.messages.len() {
        found.push(Difference::MessageCount {
            expected: expected.messages.len(),
            actual: actual.messages.len(),
        });
    }
    let mut differing = expected
        .messages
        .iter()
        .zip(&actual.messages)
        .enumerate()
        .filter_map(|(index, (e, a))| {
            message_difference(e, a).map(|how| Difference::Message { index, how })
        });
    found.extend(differing.by_ref().take(LISTED));
    let more = differing.count();
    if more > 0 {
        found.push(Difference::MoreMessages(more));
    }
    found
}

fn trailer_differences(
    expected: &[(String, Bytes)],
    actual: &[(String, Bytes)],
) -> Vec<Difference> {
    let sorted = |trailers: &[(String, Bytes)]| {
        let mut sorted = trailers.to_vec();
        sorted.sort();
        sorted
    };
    let (expected, actual) = (sorted(expected), sorted(actual));
    let mut names: Vec<&String> = expected.iter().chain(&actual).map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let values = |side: &[(String, Bytes)]| -> Vec<Bytes> {
                side.iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .collect()
            };
            let (e, a) = (values(&expected), values(&actual));
            (e != a).then(|| Difference::Trailer {
                name: name.clone(),
                expected: (!e.is_empty()).then(|| join(&e)),
                actual: (!a.is_empty()).then(|| join(&a)),
            })
        })
        .collect()
}

/// Several values of one trailer, as one (comma-separated, as HTTP folds them).
fn join(values: &[Bytes]) -> Bytes {
    Bytes::from(values.join(&b","[..]))
}

fn message_difference(expected: &Message, actual: &Message) -> Option<MessageDifference> {
    if expected.compressed != actual.compressed {
        return Some(MessageDifference::Compressed {
            expected: expected.compressed,
            actual: actual.compressed,
        });
    }
    if expected.length != actual.length {
        return Some(MessageDifference::Length {
            expected: expected.length,
            actual: actual.length,
        });
    }
    let at = expected
        .payload
        .iter()
        .zip(actual.payload.iter())
        .position(|(e, a)| e != a)?;
    Some(MessageDifference::Byte {
        length: expected.length,
        at,
        expected: expected.payload[at],
        actual: actual.payload[at],
    })
}

fn value_text(value: Option<&Bytes>) -> String {
    match value {
        None => "absent".to_owned(),
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
    }
}

/// `NotFound (5)`.
pub fn code_name(code: i32) -> String {
    format!("{:?} ({code})", tonic::Code::from_i32(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &'static [u8]) -> Message {
        Message::whole(false, Bytes::from_static(payload))
    }

    fn described(expected: &Answer, actual: &Answer) -> Vec<String> {
        differences(expected, actual)
            .iter()
            .map(|d| d.describe("recorded", "replayed"))
            .collect()
    }

    #[test]
    fn equal_answers_match_and_each_difference_is_named() {
        let recorded = Answer::new(0, vec![message(b"abc"), message(b"xyz")]);
        assert!(differences(&recorded, &recorded.clone()).is_empty());
        let other = Answer {
            code: 5,
            message: "gone".into(),
            ..Answer::new(5, vec![message(b"abd")])
        };
        assert_eq!(
            described(&recorded, &other),
            [
                "status: recorded Ok (0), replayed NotFound (5) \"gone\"",
                "response messages: recorded 2, replayed 1",
                "response message 0: 3 bytes, first difference at byte 2 (recorded 0x63, replayed 0x64)",
            ]
        );
    }

    #[test]
    fn cut_messages_compare_their_prefix_and_length() {
        let mut cut = message(b"ab");
        cut.length = 4;
        let recorded = Answer::new(0, vec![cut]);
        assert!(differences(&recorded, &Answer::new(0, vec![message(b"abcd")])).is_empty());
        assert_eq!(
            described(&recorded, &Answer::new(0, vec![message(b"abc")])),
            ["response message 0: length: recorded 4 bytes, replayed 3 bytes"]
        );
    }

    #[test]
    fn trailers_are_compared_by_name_whatever_their_order() {
        let with = |trailers: &[(&str, &'static [u8])]| Answer {
            trailers: Some(
                trailers
                    .iter()
                    .map(|(n, v)| (n.to_string(), Bytes::from_static(v)))
                    .collect(),
            ),
            ..Answer::default()
        };
        let expected = with(&[("a", b"1"), ("b", b"2")]);
        assert!(differences(&expected, &with(&[("b", b"2"), ("a", b"1")])).is_empty());
        assert_eq!(
            described(&expected, &with(&[("a", b"1"), ("b", b"3"), ("c", b"4")])),
            [
                "trailer b: recorded \"2\", replayed \"3\"",
                "trailer c: recorded absent, replayed \"4\"",
            ]
        );
        // Not compared unless both sides hold them.
        assert!(differences(&expected, &Answer::default()).is_empty());
    }

    #[test]
    fn past_five_differing_messages_the_rest_are_counted() {
        let ones = Answer::new(0, (0..8).map(|_| message(b"1")).collect());
        let twos = Answer::new(0, (0..8).map(|_| message(b"2")).collect());
        let found = differences(&ones, &twos);
        assert_eq!(found.len(), 6);
        assert_eq!(found[5], Difference::MoreMessages(3));
    }
}
