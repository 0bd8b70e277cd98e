//! The proto3 JSON mapping of the tap's messages, as serde attributes.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CallEnded, CallStarted, Kind, Message, Metadata, MirrorResult, TapEvent};

/// `TapEvent` with its oneof as optional fields (`{"schemaVersion":1,"started":{…}}`).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Event {
    #[serde(default)]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<CallStarted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<CallEnded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mirror: Option<MirrorResult>,
}

impl From<TapEvent> for Event {
    fn from(event: TapEvent) -> Self {
        let mut json = Event {
            schema_version: event.schema_version,
            instance: event.instance,
            started: None,
            message: None,
            ended: None,
            mirror: None,
        };
        match event.event {
            Some(Kind::Started(e)) => json.started = Some(e),
            Some(Kind::Message(e)) => json.message = Some(e),
            Some(Kind::Ended(e)) => json.ended = Some(e),
            Some(Kind::Mirror(e)) => json.mirror = Some(e),
            None => {}
        }
        json
    }
}

impl TryFrom<Event> for TapEvent {
    type Error = &'static str;

    fn try_from(json: Event) -> Result<Self, Self::Error> {
        let event = match (json.started, json.message, json.ended, json.mirror) {
            (Some(e), None, None, None) => Some(Kind::Started(e)),
            (None, Some(e), None, None) => Some(Kind::Message(e)),
            (None, None, Some(e), None) => Some(Kind::Ended(e)),
            (None, None, None, Some(e)) => Some(Kind::Mirror(e)),
            (None, None, None, None) => None,
            _ => return Err("at most one of started, message, ended and mirror"),
        };
        Ok(TapEvent {
            schema_version: json.schema_version,
            instance: json.instance,
            event,
        })
    }
}

/// 64-bit integers as decimal strings (numbers are accepted too).
pub(super) mod int64 {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + TryFrom<i128>,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Unsigned(u64),
            Signed(i64),
        }
        let n = match Either::deserialize(d)? {
            Either::Text(text) => return text.parse().map_err(de::Error::custom),
            Either::Unsigned(n) => i128::from(n),
            Either::Signed(n) => i128::from(n),
        };
        T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is out of range")))
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let text = (!self.key.ends_with("-bin"))
            .then(|| std::str::from_utf8(&self.value).ok())
            .flatten()
            .or((!self.text.is_empty()).then_some(self.text.as_str()));
        let mut out = s.serialize_struct("Metadata", 2)?;
        out.serialize_field("key", &self.key)?;
        match text {
            Some(text) => out.serialize_field("text", text)?,
            None => {
                use ::base64::Engine as _;
                let value = ::base64::engine::general_purpose::STANDARD.encode(&self.value);
                out.serialize_field("value", &value)?;
            }
        }
        out.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(default)]
        #[derive(Default)]
        struct Json {
            key: String,
            #[serde(with = "base64")]
            value: Bytes,
            text: String,
        }
        let json = Json::deserialize(d)?;
        let value = if json.text.is_empty() {
            json.value
        } else {
            Bytes::from(json.text)
        };
        Ok(Metadata {
            key: json.key,
            value,
            text: String::new(),
        })
    }
}

/// Bytes as standard base64.
pub(super) mod base64 {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{de, Deserialize, Deserializer, Serializer};

    const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub(crate) fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ENGINE.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ENGINE
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(de::Error::custom)
    }
}

/// The `Direction` enum by name.
pub(super) mod direction {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::super::Direction;

    pub(crate) fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match Direction::try_from(*v) {
            Ok(Direction::Unspecified) => s.serialize_str("DIRECTION_UNSPECIFIED"),
            Ok(Direction::Request) => s.serialize_str("REQUEST"),
            Ok(Direction::Response) => s.serialize_str("RESPONSE"),
            Err(_) => s.serialize_i32(*v),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            Number(i32),
        }
        match Either::deserialize(d)? {
            Either::Name(name) => match name.as_str() {
                "DIRECTION_UNSPECIFIED" => Ok(Direction::Unspecified as i32),
                "REQUEST" => Ok(Direction::Request as i32),
                "RESPONSE" => Ok(Direction::Response as i32),
                _ => Err(de::Error::custom(format!("unknown direction {name}"))),
            },
            Either::Number(n) => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CallEnded, CallStarted, Direction, Encoding, Message, Metadata};
    use super::*;

    fn every_kind() -> Vec<TapEvent> {
        let metadata = vec![
            Metadata {
                key: "x-a".into(),
                value: "b".into(),
                text: String::new(),
            },
            Metadata {
                key: "x-c-bin".into(),
                value: "AP8".into(),
                text: String::new(),
            },
        ];
        [
            Kind::Started(CallStarted {
                call_id: u64::MAX,
                time_unix_nanos: 1_700_000_000_123_456_789,
                method: "/p.S/M".into(),
                peer: "127.0.0.1:9".into(),
                metadata: metadata.clone(),
                backend: "b:1".into(),
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
            }),
            Kind::Message(Message {
                call_id: 7,
                direction: Direction::Response as i32,
                sequence: 3,
                compressed: true,
                payload: bytes::Bytes::from_static(&[0, 1, 254, 255]),
                length: 9,
            }),
            Kind::Ended(CallEnded {
                call_id: 7,
                code: 5,
                trailers: metadata,
                duration_nanos: -1,
                request_messages: 1,
                response_messages: 2,
                request_bytes: 3,
                response_bytes: 4,
            }),
            Kind::Mirror(MirrorResult {
                call_id: 7,
                method: "/p.S/M".into(),
                backend: "b:2".into(),
                result: "differ".into(),
                differences: vec!["response messages: primary 1, mirror 2".into()],
                first_differing_byte: -1,
            }),
        ]
        .into_iter()
        .map(|kind| TapEvent {
            schema_version: 1,
            instance: "replica-1".into(),
            event: Some(kind),
        })
        .collect()
    }

    #[test]
    fn every_event_survives_a_json_round_trip() {
        for event in every_kind() {
            let json = Encoding::Json.encode(&event);
            assert_eq!(Encoding::detect(&json), Encoding::Json);
            assert_eq!(Encoding::Json.decode(&json).unwrap(), event);
            let protobuf = Encoding::Protobuf.encode(&event);
            assert_eq!(Encoding::detect(&protobuf), Encoding::Protobuf);
        }
    }

    #[test]
    fn json_follows_the_proto3_mapping() {
        let events = every_kind();
        let message: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.encode(&events[1])).unwrap();
        assert_eq!(
            message,
            serde_json::json!({"schemaVersion": 1, "instance": "replica-1", "message": {
                "callId": "7", "direction": "RESPONSE", "sequence": "3", "compressed": true,
                "payload": "AAH+/w==", "length": 9}})
        );
        let started: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.encode(&events[0])).unwrap();
        assert_eq!(started["started"]["callId"], "18446744073709551615");
        // Text values as strings, -bin values as bytes (base64 of their wire form).
        assert_eq!(
            started["started"]["metadata"],
            serde_json::json!([{"key": "x-a", "text": "b"}, {"key": "x-c-bin", "value": "QVA4"}])
        );
        // Numbers are accepted for 64-bit fields, as proto3 JSON parsers do.
        let decoded = Encoding::Json
            .decode(br#"{"schemaVersion":1,"ended":{"callId":7,"code":2}}"#)
            .unwrap();
        assert!(matches!(
            decoded.event,
            Some(Kind::Ended(CallEnded {
                call_id: 7,
                code: 2,
                ..
            }))
        ));
        let both = Encoding::Json.decode(br#"{"started":{},"ended":{}}"#);
        assert!(both.unwrap_err().to_string().contains("at most one of"));
    }

    /// The event as a reader built before `mirror` existed decodes it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FirstTapEvent {
        #[prost(uint32, tag = "1")]
        schema_version: u32,
        #[prost(oneof = "FirstKind", tags = "2, 3, 4")]
        event: Option<FirstKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    enum FirstKind {
        #[prost(message, tag = "2")]
        Started(CallStarted),
        #[prost(message, tag = "3")]
        Message(Message),
        #[prost(message, tag = "4")]
        Ended(CallEnded),
    }

    #[test]
    fn readers_that_predate_mirror_results_skip_them() {
        use prost::Message as _;
        let mirror = every_kind().pop().unwrap();
        assert!(matches!(mirror.event, Some(Kind::Mirror(_))));
        let bytes = Encoding::Protobuf.encode(&mirror);
        let old = FirstTapEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(old.schema_version, 1);
        assert_eq!(old.event, None, "an unknown oneof field is skipped");
        // JSON readers ignore the unknown "mirror" key the same way.
        let json: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.encode(&mirror)).unwrap();
        assert_eq!(json["mirror"]["result"], "differ");
        assert_eq!(json["mirror"]["firstDifferingByte"], "-1");
    }
}
