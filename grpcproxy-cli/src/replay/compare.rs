//! How a replayed call differs from its recording: the library's comparison
//! ([`grpcproxy::compare`], shared with mirroring) of the two answers.

use grpcproxy::compare::{self, Answer, Message};
use grpcproxy::mq::wire;

use super::call::Outcome;
use super::recording::{RecordedCall, RecordedMessage};

/// Every way `outcome` differs from what `call` recorded (empty: they match). The status
/// code, `grpc-message`, and each response message's compressed flag and bytes count (for
/// payloads cut when recorded, the recorded prefix and the full length).
pub(crate) fn differences(call: &RecordedCall, outcome: &Outcome) -> Vec<String> {
    let end = call
        .end
        .as_ref()
        .expect("only complete recordings are replayed");
    let recorded = Answer {
        code: end.code,
        message: grpc_message(&end.trailers),
        trailers: None,
        messages: call.responses.iter().map(message).collect(),
    };
    let replayed = Answer {
        code: outcome.code,
        message: outcome.message.clone(),
        trailers: None,
        messages: outcome.responses.iter().map(message).collect(),
    };
    compare::differences(&recorded, &replayed)
        .iter()
        .map(|d| d.describe("recorded", "replayed"))
        .collect()
}

fn message(recorded: &RecordedMessage) -> Message {
    Message {
        compressed: recorded.compressed,
        payload: recorded.payload.clone(),
        length: recorded.length,
    }
}

fn grpc_message(trailers: &[wire::Metadata]) -> String {
    trailers
        .iter()
        .find(|m| m.key == "grpc-message")
        .map(|m| String::from_utf8_lossy(&m.value).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &'static [u8]) -> RecordedMessage {
        RecordedMessage {
            compressed: false,
            payload: bytes::Bytes::from_static(payload),
            length: payload.len() as u32,
        }
    }

    fn recorded(responses: Vec<RecordedMessage>) -> RecordedCall {
        let events = [wire::TapEvent {
            schema_version: 1,
            instance: String::new(),
            event: Some(wire::Kind::Started(wire::CallStarted {
                call_id: 1,
                ..Default::default()
            })),
        }];
        let mut call = super::super::recording::calls(events).remove(0);
        call.end = Some(wire::CallEnded {
            code: 0,
            ..Default::default()
        });
        call.responses = responses;
        call
    }

    #[test]
    fn equal_outcomes_match_and_each_difference_is_named() {
        let call = recorded(vec![message(b"abc"), message(b"xyz")]);
        let same = Outcome {
            code: 0,
            message: String::new(),
            responses: vec![message(b"abc"), message(b"xyz")],
        };
        assert!(differences(&call, &same).is_empty());
        let other = Outcome {
            code: 5,
            message: "gone".into(),
            responses: vec![message(b"abd")],
        };
        assert_eq!(
            differences(&call, &other),
            [
                "status: recorded Ok (0), replayed NotFound (5) \"gone\"",
                "response messages: recorded 2, replayed 1",
                "response message 0: 3 bytes, first difference at byte 2 (recorded 0x63, replayed 0x64)",
            ]
        );
    }

    #[test]
    fn cut_recordings_compare_their_prefix_and_length() {
        let mut cut = message(b"ab");
        cut.length = 4;
        let call = recorded(vec![cut]);
        let longer = Outcome {
            code: 0,
            message: String::new(),
            responses: vec![message(b"abcd")],
        };
        assert!(differences(&call, &longer).is_empty());
        let shorter = Outcome {
            responses: vec![message(b"abc")],
            ..longer
        };
        assert_eq!(
            differences(&call, &shorter),
            ["response message 0: length: recorded 4 bytes, replayed 3 bytes"]
        );
    }
}
