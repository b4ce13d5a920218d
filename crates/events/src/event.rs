//! Integration events, serialized as versioned JSON so producers and consumers of different
//! releases can coexist during a rolling deploy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use cashflow_domain::{
    Amount, BusinessDate, Currency, EntryId, EntryType, EventId, MerchantId, MerchantTimeZone, Posting,
};

/// The schema version written by this release.
pub const SCHEMA_VERSION: u32 = 1;

/// One integration event.
///
/// Its wire form is one object: `event_id`, `version`, `occurred_at`, `trace` (when set),
/// `type` (the body's kind) and `data` (the body). Both directions are written by hand around
/// the bodies' derived forms, in one pass: serde's `flatten` serializes through a buffering
/// map, and the adjacently tagged body used to be parsed into a `serde_json::Value` first (a
/// tree of owned strings) so that an unknown kind could be told from bad data. With chrono's
/// instants (see `instant`) they were about a tenth of an embedded write's instructions
/// (BENCHMARKS.md, session 28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique per event; consumers deduplicate on it.
    pub event_id: EventId,
    /// Schema version of `body`.
    pub version: u32,
    /// When the producing transaction committed (the ledger's clock); consolidation lag is
    /// measured from here.
    pub occurred_at: DateTime<Utc>,
    /// The W3C `traceparent` of the request that produced the event, so the consolidator's work
    /// joins the same trace (and queues can carry it as a message attribute).
    pub trace: Option<String>,
    pub body: EventBody,
}

/// What happened: the wire form's `type` and `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    MerchantRegistered(MerchantRegistered),
    EntryRecorded(EntryRecorded),
    DayClosed(DayClosed),
    DayReopened(DayReopened),
    /// A kind this release does not know (a newer producer's): parsed, so it is acknowledged
    /// and skipped instead of dead-lettered. Consumers of releases before this variant existed
    /// treat such an event as poison (see `docs/architecture.md`, "Closing a day"). Never
    /// produced, so never serialized.
    Unknown,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let fields = if self.trace.is_some() { 6 } else { 5 };
        let mut event = serializer.serialize_struct("Event", fields)?;
        event.serialize_field("event_id", &self.event_id)?;
        event.serialize_field("version", &self.version)?;
        event.serialize_field("occurred_at", &crate::instant::Wire(&self.occurred_at))?;
        if let Some(trace) = &self.trace {
            event.serialize_field("trace", trace)?;
        }
        /// The body's two fields: its kind and its data.
        fn body<E: SerializeStruct, T: Serialize>(event: &mut E, kind: &'static str, data: &T) -> Result<(), E::Error> {
            event.serialize_field("type", kind)?;
            event.serialize_field("data", data)
        }
        match &self.body {
            EventBody::MerchantRegistered(data) => body(&mut event, "merchant_registered", data)?,
            EventBody::EntryRecorded(data) => body(&mut event, "entry_recorded", data)?,
            EventBody::DayClosed(data) => body(&mut event, "day_closed", data)?,
            EventBody::DayReopened(data) => body(&mut event, "day_reopened", data)?,
            EventBody::Unknown => return Err(S::Error::custom("an event of an unknown kind is never written")),
        }
        event.end()
    }
}

/// The wire form as read, in one pass. Our producers write `type` before `data`, so the data
/// is parsed straight into its kind's type; from a producer that writes `data` first it is
/// kept as its text until the kind is known. An unknown kind becomes [`EventBody::Unknown`]
/// (its data skipped), while a known kind with bad data is still an error (poison). Unknown
/// keys are ignored, a repeated one is an error, as in a derived `Deserialize`.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// The keys of an event's wire form.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    EventId,
    Version,
    OccurredAt,
    Trace,
    Type,
    Data,
    #[serde(other)]
    Other,
}

/// The kinds of body this release knows.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    MerchantRegistered,
    EntryRecorded,
    DayClosed,
    DayReopened,
    #[serde(other)]
    Unknown,
}

/// A body's data, as parsed by the one [`Kind::read`] knows how.
trait Data<'de>: Sized {
    fn read<T: Deserialize<'de>>(self) -> Result<T, String>;
    fn skip(self) -> Result<(), String>;
}

impl Kind {
    fn read<'de>(self, data: impl Data<'de>) -> Result<EventBody, String> {
        Ok(match self {
            Kind::MerchantRegistered => EventBody::MerchantRegistered(data.read()?),
            Kind::EntryRecorded => EventBody::EntryRecorded(data.read()?),
            Kind::DayClosed => EventBody::DayClosed(data.read()?),
            Kind::DayReopened => EventBody::DayReopened(data.read()?),
            Kind::Unknown => {
                data.skip()?;
                EventBody::Unknown
            }
        })
    }
}

/// The data as the next value of the event's map.
struct NextValue<'a, A>(&'a mut A);

impl<'de, A: serde::de::MapAccess<'de>> Data<'de> for NextValue<'_, A> {
    fn read<T: Deserialize<'de>>(self) -> Result<T, String> {
        self.0.next_value().map_err(|e| e.to_string())
    }

    fn skip(self) -> Result<(), String> {
        self.0.next_value::<serde::de::IgnoredAny>().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The data kept as its text (it came before the kind).
struct Kept(Box<serde_json::value::RawValue>);

impl<'de> Data<'de> for &'de Kept {
    fn read<T: Deserialize<'de>>(self) -> Result<T, String> {
        serde_json::from_str(self.0.get()).map_err(|e| e.to_string())
    }

    fn skip(self) -> Result<(), String> {
        Ok(())
    }
}

struct EventVisitor;

impl<'de> serde::de::Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        use serde::de::Error;
        fn once<T, E: Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut event_id, mut version, mut occurred_at, mut trace) = (None, None, None, None::<Option<String>>);
        let (mut kind, mut body, mut kept) = (None::<Kind>, None, None::<Kept>);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::EventId => once(&mut event_id, "event_id", map.next_value()?)?,
                Key::Version => once(&mut version, "version", map.next_value::<u32>()?)?,
                Key::OccurredAt => {
                    let at = map.next_value::<crate::instant::Value>()?;
                    once(&mut occurred_at, "occurred_at", at.0)?;
                }
                Key::Trace => once(&mut trace, "trace", map.next_value()?)?,
                Key::Type => once(&mut kind, "type", map.next_value()?)?,
                Key::Data if body.is_some() || kept.is_some() => return Err(A::Error::duplicate_field("data")),
                Key::Data => match kind {
                    Some(kind) => body = Some(kind.read(NextValue(&mut map)).map_err(A::Error::custom)?),
                    None => kept = Some(Kept(map.next_value()?)),
                },
                Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        let body = match (body, &kept) {
            (Some(body), _) => body,
            (None, Some(kept)) => kind.read(kept).map_err(A::Error::custom)?,
            (None, None) => return Err(A::Error::missing_field("data")),
        };
        Ok(Event {
            event_id: event_id.ok_or_else(|| A::Error::missing_field("event_id"))?,
            version: version.ok_or_else(|| A::Error::missing_field("version"))?,
            occurred_at: occurred_at.ok_or_else(|| A::Error::missing_field("occurred_at"))?,
            trace: trace.flatten(),
            body,
        })
    }
}

/// The merchant closed its books through `date` (and every earlier day). `seq` orders the
/// merchant's closes and reopens as the ledger committed them, so a consumer applying them in
/// any order ends with the latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayClosed {
    pub merchant_id: MerchantId,
    pub date: BusinessDate,
    /// The watermark before this close: the close closes the days after it through `date`
    /// (every day up to `date` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_closed_through: Option<BusinessDate>,
    #[serde(with = "crate::instant")]
    pub closed_at: DateTime<Utc>,
    /// What was counted in the drawer, minor units (absent when not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_cash: Option<i64>,
    /// Counted minus expected, minor units (absent when not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<i64>,
    pub seq: i64,
}

/// The merchant reopened its books from `date`: the watermark moved back to
/// `closed_through` (the day before `date`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayReopened {
    pub merchant_id: MerchantId,
    pub date: BusinessDate,
    /// The watermark before the reopen: the days `date..=previous_closed_through` are open again.
    pub previous_closed_through: BusinessDate,
    /// The watermark after it (absent when no day stays closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_through: Option<BusinessDate>,
    #[serde(with = "crate::instant")]
    pub reopened_at: DateTime<Utc>,
    pub seq: i64,
}

/// A merchant exists; consolidation learns its currency so that an empty report can be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantRegistered {
    pub merchant_id: MerchantId,
    pub currency: Currency,
    /// The IANA name on the wire; an unknown zone makes the event a poison message.
    pub time_zone: MerchantTimeZone,
}

/// An entry was recorded (reversals included): exactly what consolidation needs, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecorded {
    pub merchant_id: MerchantId,
    pub entry_id: EntryId,
    pub business_date: BusinessDate,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Minor units.
    pub amount: Amount,
    pub currency: Currency,
    #[serde(with = "crate::instant")]
    pub recorded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_of: Option<EntryId>,
    /// Set on an adjustment: the closed day the entry was meant for. It counts on
    /// `business_date` like any entry; absent from the wire form otherwise, so the events of
    /// earlier producers parse and older consumers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusts_date: Option<BusinessDate>,
}

impl EntryRecorded {
    /// The posting this entry contributes to its business date.
    pub fn posting(&self) -> Posting {
        Posting { entry_id: self.entry_id, business_date: self.business_date, kind: self.kind, amount: self.amount }
    }
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(occurred_at: DateTime<Utc>, body: EventBody) -> Self {
        Self { event_id: EventId::new(), version: SCHEMA_VERSION, occurred_at, trace: None, body }
    }

    /// The same event under `id`: an entry's event takes the entry's id, so a day rebuilt from
    /// the ledger's entries can record the events it already counted (see consolidation's
    /// reconciliation).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }

    /// The event id that announces the entry `entry` (recorded by this release or later).
    pub fn id_of_entry(entry: EntryId) -> EventId {
        EventId::from_uuid(*entry.as_uuid())
    }

    /// The same event, part of the trace `traceparent`.
    pub fn with_trace(mut self, traceparent: Option<String>) -> Self {
        self.trace = traceparent;
        self
    }

    /// The `trace` of an event's wire form without parsing the rest (for queue adapters that
    /// forward it as a message attribute).
    ///
    /// The relay asks it of every event it publishes, so our own wire form is read without a
    /// parser: `"trace"` comes after three keys whose values hold no brace or bracket, and a
    /// key found before any `{` but the first and any `[` is one of the top-level object's
    /// (inside a string, the quotes around it would be escaped). Anything else is parsed.
    pub fn trace_of(json: &str) -> Option<String> {
        // One searcher for every call: building it is most of a short search's cost.
        static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"trace\":\""));
        let bytes = json.as_bytes();
        if let Some(at) = KEY.find(bytes) {
            let (before, after) = bytes.split_at(at);
            let top_level = before.first() == Some(&b'{')
                && before.get(1..).is_some_and(|rest| memchr::memchr2(b'{', b'[', rest).is_none());
            let value = after
                .get(KEY.needle().len()..)
                .and_then(|after| after.get(..memchr::memchr(b'"', after)?))
                .filter(|value| top_level && memchr::memchr(b'\\', value).is_none());
            if let Some(value) = value {
                return std::str::from_utf8(value).ok().map(str::to_owned);
            }
        }
        #[derive(Deserialize)]
        struct TraceOnly {
            trace: Option<String>,
        }
        serde_json::from_str::<TraceOnly>(json).ok().and_then(|t| t.trace)
    }

    /// The merchant the event is about (none for a kind this release does not know).
    pub fn merchant_id(&self) -> Option<MerchantId> {
        match &self.body {
            EventBody::MerchantRegistered(m) => Some(m.merchant_id),
            EventBody::EntryRecorded(e) => Some(e.merchant_id),
            EventBody::DayClosed(c) => Some(c.merchant_id),
            EventBody::DayReopened(r) => Some(r.merchant_id),
            EventBody::Unknown => None,
        }
    }

    /// The merchant and the earliest business date whose report the event changes (a closed
    /// or reopened day's report says so), for cache invalidation; none for a registration.
    pub fn changes_reports_from(&self) -> Option<(MerchantId, BusinessDate)> {
        match &self.body {
            EventBody::EntryRecorded(e) => Some((e.merchant_id, e.business_date)),
            EventBody::DayClosed(c) => Some((
                c.merchant_id,
                c.previous_closed_through.and_then(|d| d.succ()).unwrap_or(BusinessDate::MIN).min(c.date),
            )),
            EventBody::DayReopened(r) => Some((r.merchant_id, r.date)),
            EventBody::MerchantRegistered(_) | EventBody::Unknown => None,
        }
    }

    /// JSON text, the wire form on every queue.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the wire form; an error marks a poison message.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let event = Event::new(
            Utc::now(),
            EventBody::EntryRecorded(EntryRecorded {
                merchant_id: MerchantId::new(),
                entry_id: EntryId::new(),
                business_date: BusinessDate::parse("2026-11-23").unwrap(),
                kind: EntryType::Debit,
                amount: Amount::from_minor(1234).unwrap(),
                currency: Currency::BRL,
                recorded_at: Utc::now(),
                reversal_of: None,
                adjusts_date: Some(BusinessDate::parse("2026-11-20").unwrap()),
            }),
        );
        let json = event.to_json();
        assert!(json.contains(r#""type":"entry_recorded""#), "{json}");
        assert_eq!(Event::from_json(&json).unwrap(), event);
    }

    #[test]
    fn the_trace_travels_with_the_event_and_is_optional() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let body = EventBody::MerchantRegistered(MerchantRegistered {
            merchant_id: MerchantId::new(),
            currency: Currency::BRL,
            time_zone: MerchantTimeZone::parse("UTC").unwrap(),
        });
        let traced = Event::new(Utc::now(), body.clone()).with_trace(Some(tp.clone()));
        assert_eq!(Event::trace_of(&traced.to_json()), Some(tp));
        let untraced = Event::new(Utc::now(), body).to_json();
        assert!(!untraced.contains("trace"), "{untraced}");
        assert_eq!(Event::trace_of(&untraced), None);
        assert!(Event::from_json(&untraced).is_ok(), "events of older producers still parse");
    }

    #[test]
    fn the_trace_is_the_top_level_objects_whatever_the_key_order() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // A `trace` nested in the body is not the event's.
        let nested = r#"{"event_id":"e","version":9,"type":"future_kind","data":{"trace":"00-nested"}}"#;
        assert_eq!(Event::trace_of(nested), None);
        let both = format!(r#"{{"data":{{"trace":"00-nested"}},"trace":"{tp}"}}"#);
        assert_eq!(Event::trace_of(&both).as_deref(), Some(tp));
        // Written after the body, or with escapes, it is still found.
        let last = format!(r#"{{"event_id":"e","data":{{"note":"[x]"}},"trace":"{tp}"}}"#);
        assert_eq!(Event::trace_of(&last).as_deref(), Some(tp));
        let escaped = r#"{"trace":"00-\u0034bf"}"#;
        assert_eq!(Event::trace_of(escaped).as_deref(), Some("00-4bf"));
        // And a quoted key inside a string is not a key.
        let quoted = format!(r#"{{"note":"\"trace\":\"00-fake\"","trace":"{tp}"}}"#);
        assert_eq!(Event::trace_of(&quoted).as_deref(), Some(tp));
    }

    /// The wire form of this schema version, as producers of earlier releases wrote it (the
    /// time zone was then a plain string).
    const MERCHANT_REGISTERED_V1: &str = r#"{"event_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f60","version":1,"occurred_at":"2026-11-23T13:15:00.123456Z","type":"merchant_registered","data":{"merchant_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f61","currency":"BRL","time_zone":"America/Sao_Paulo"}}"#;
    const ENTRY_RECORDED_V1: &str = r#"{"event_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f62","version":1,"occurred_at":"2026-11-23T13:15:00.123456Z","trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","type":"entry_recorded","data":{"merchant_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f61","entry_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f63","business_date":"2026-11-23","type":"credit","amount":15000,"currency":"BRL","recorded_at":"2026-11-23T13:15:00.120001Z","reversal_of":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f64"}}"#;

    #[test]
    fn the_wire_form_of_earlier_producers_parses_and_serializes_back_byte_for_byte() {
        for golden in [MERCHANT_REGISTERED_V1, ENTRY_RECORDED_V1] {
            let event = Event::from_json(golden).unwrap();
            assert_eq!(event.to_json(), golden);
        }
        let EventBody::MerchantRegistered(m) = Event::from_json(MERCHANT_REGISTERED_V1).unwrap().body else {
            panic!("a merchant_registered event")
        };
        assert_eq!(m.time_zone, MerchantTimeZone::parse("America/Sao_Paulo").unwrap());
    }

    #[test]
    fn an_unknown_time_zone_makes_the_event_a_poison_message() {
        let bad = MERCHANT_REGISTERED_V1.replace("America/Sao_Paulo", "Mars/Olympus_Mons");
        assert!(Event::from_json(&bad).is_err());
    }

    #[test]
    fn close_and_reopen_events_round_trip_and_an_unknown_kind_parses_as_unknown() {
        let closed = Event::new(
            Utc::now(),
            EventBody::DayClosed(DayClosed {
                merchant_id: MerchantId::new(),
                date: BusinessDate::parse("2026-11-23").unwrap(),
                previous_closed_through: None,
                closed_at: Utc::now(),
                counted_cash: Some(10_000),
                difference: Some(-950),
                seq: 7,
            }),
        );
        let reopened = Event::new(
            Utc::now(),
            EventBody::DayReopened(DayReopened {
                merchant_id: MerchantId::new(),
                date: BusinessDate::parse("2026-11-20").unwrap(),
                previous_closed_through: BusinessDate::parse("2026-11-23").unwrap(),
                closed_through: BusinessDate::parse("2026-11-19").ok(),
                reopened_at: Utc::now(),
                seq: 8,
            }),
        );
        for event in [closed, reopened] {
            assert_eq!(Event::from_json(&event.to_json()).unwrap(), event);
        }
        let newer = ENTRY_RECORDED_V1.replace(r#""type":"entry_recorded""#, r#""type":"till_counted""#);
        let parsed = Event::from_json(&newer).expect("a newer kind is not poison");
        assert_eq!((parsed.merchant_id(), parsed.body), (None, EventBody::Unknown));
    }

    #[test]
    fn a_malformed_event_is_an_error_not_a_panic() {
        assert!(Event::from_json("{}").is_err());
        assert!(Event::from_json(r#"{"event_id":"x"}"#).is_err());
        assert!(Event::from_json("not json").is_err());
    }

    #[test]
    fn the_body_is_read_whichever_of_type_and_data_comes_first() {
        let event = Event::from_json(ENTRY_RECORDED_V1).unwrap();
        // A producer that writes `data` before `type`, and keys this release does not know
        let data = ENTRY_RECORDED_V1.split(r#""data":"#).nth(1).unwrap().strip_suffix('}').unwrap();
        let reordered = format!(
            r#"{{"data":{data},"note":{{"x":[1]}},"type":"entry_recorded","event_id":"0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f62","version":1,"occurred_at":"2026-11-23T13:15:00.123456Z","trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}"#
        );
        assert_eq!(Event::from_json(&reordered).unwrap(), event);
        // An unknown kind is skipped whichever comes first; bad data of a known kind is poison either way
        let unknown_first = reordered.replace(r#""type":"entry_recorded""#, r#""type":"till_counted""#);
        assert_eq!(Event::from_json(&unknown_first).unwrap().body, EventBody::Unknown);
        let bad = |json: &str| json.replace(r#""amount":15000"#, r#""amount":"lots""#);
        assert!(Event::from_json(&bad(ENTRY_RECORDED_V1)).is_err());
        assert!(Event::from_json(&bad(&reordered)).is_err());
        // A key given twice, or a missing kind or body, is an error
        let twice = ENTRY_RECORDED_V1.replacen(r#""version":1,"#, r#""version":1,"version":1,"#, 1);
        assert!(Event::from_json(&twice).is_err());
        assert!(Event::from_json(&ENTRY_RECORDED_V1.replace(r#""type":"entry_recorded","#, "")).is_err());
        let no_data = format!("{}}}", ENTRY_RECORDED_V1.split(r#","data":"#).next().unwrap());
        assert!(Event::from_json(&no_data).is_err(), "{no_data}");
        // A null trace is no trace
        let null_trace =
            ENTRY_RECORDED_V1.replace(r#""00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01""#, "null");
        assert_eq!(Event::from_json(&null_trace).unwrap().trace, None);
    }
}
