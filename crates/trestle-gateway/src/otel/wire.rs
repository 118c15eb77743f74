//! The few protobuf messages a span is made of, written straight into bytes: no message
//! structs, no allocation per attribute. The writer thread encodes each span once; the
//! sending task only concatenates them into an `ExportTraceServiceRequest`, since a repeated
//! message field on the wire is its elements one after the other. The tests decode what is
//! written with the `opentelemetry-proto` types.

use prost::encoding::{encode_varint, encoded_len_varint};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn key(field: u64, wire: u64, buf: &mut Vec<u8>) {
    encode_varint(field << 3 | wire, buf);
}

fn len_of(n: usize) -> usize {
    encoded_len_varint(n as u64)
}

/// The start of a length-delimited field of `len` bytes, to be written next.
pub fn header(field: u64, len: usize, buf: &mut Vec<u8>) {
    key(field, LEN, buf);
    encode_varint(len as u64, buf);
}

/// A length-delimited field: `bytes`, `string` or an encoded message.
pub fn bytes(field: u64, value: &[u8], buf: &mut Vec<u8>) {
    key(field, LEN, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
}

/// A string field made of two parts (`chat ` and a model).
pub fn str2(field: u64, a: &str, b: &str, buf: &mut Vec<u8>) {
    key(field, LEN, buf);
    encode_varint((a.len() + b.len()) as u64, buf);
    buf.extend_from_slice(a.as_bytes());
    buf.extend_from_slice(b.as_bytes());
}

pub fn varint(field: u64, value: u64, buf: &mut Vec<u8>) {
    key(field, VARINT, buf);
    encode_varint(value, buf);
}

pub fn fixed64(field: u64, value: u64, buf: &mut Vec<u8>) {
    key(field, FIXED64, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn fixed32(field: u64, value: u32, buf: &mut Vec<u8>) {
    key(field, FIXED32, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// An attribute value (`AnyValue`).
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Value<'_> {
    /// The `AnyValue` message's length.
    fn len(&self) -> usize {
        match self {
            Value::Str(s) => 1 + len_of(s.len()) + s.len(),
            Value::Int(i) => 1 + encoded_len_varint(*i as u64),
            Value::Double(_) => 1 + 8,
            Value::Bool(_) => 1 + 1,
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        match self {
            Value::Str(s) => bytes(1, s.as_bytes(), buf),
            Value::Int(i) => varint(3, *i as u64, buf),
            Value::Double(d) => fixed64(4, d.to_bits(), buf),
            Value::Bool(b) => varint(2, u64::from(*b), buf),
        }
    }
}

/// A `KeyValue` as field `field` of the message being written.
pub fn attr(field: u64, name: &str, value: Value<'_>, buf: &mut Vec<u8>) {
    let any = value.len();
    let kv = 1 + len_of(name.len()) + name.len() + 1 + len_of(any) + any;
    key(field, LEN, buf);
    encode_varint(kv as u64, buf);
    bytes(1, name.as_bytes(), buf);
    key(2, LEN, buf);
    encode_varint(any as u64, buf);
    value.write(buf);
}

/// A `KeyValue` whose value is an array of strings.
pub fn attr_strs<'a>(
    field: u64,
    name: &str,
    values: impl Iterator<Item = &'a str> + Clone,
    buf: &mut Vec<u8>,
) {
    // ArrayValue { repeated AnyValue values = 1 }
    let array: usize = values
        .clone()
        .map(|v| {
            let any = Value::Str(v).len();
            1 + len_of(any) + any
        })
        .sum();
    let any = 1 + len_of(array) + array; // AnyValue { array_value = 5 }
    let kv = 1 + len_of(name.len()) + name.len() + 1 + len_of(any) + any;
    key(field, LEN, buf);
    encode_varint(kv as u64, buf);
    bytes(1, name.as_bytes(), buf);
    key(2, LEN, buf);
    encode_varint(any as u64, buf);
    key(5, LEN, buf);
    encode_varint(array as u64, buf);
    for v in values {
        let value = Value::Str(v);
        key(1, LEN, buf);
        encode_varint(value.len() as u64, buf);
        value.write(buf);
    }
}

/// A `Status` as field `field`.
pub fn status(field: u64, code: i32, message: &str, buf: &mut Vec<u8>) {
    let mut inner = 1 + encoded_len_varint(code as u64);
    if !message.is_empty() {
        inner += 1 + len_of(message.len()) + message.len();
    }
    key(field, LEN, buf);
    encode_varint(inner as u64, buf);
    if !message.is_empty() {
        bytes(2, message.as_bytes(), buf);
    }
    varint(3, code as u64, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[test]
    fn what_is_written_decodes_as_a_span() {
        let mut buf = Vec::new();
        bytes(1, &[7; 16], &mut buf);
        str2(5, "chat ", "m1", &mut buf);
        varint(6, 3, &mut buf);
        fixed64(7, 1_700_000_000_000_000_000, &mut buf);
        fixed32(16, 0x301, &mut buf);
        let long = "x".repeat(300);
        attr(9, "a.str", Value::Str(&long), &mut buf);
        attr(9, "a.int", Value::Int(1 << 40), &mut buf);
        attr(9, "a.neg", Value::Int(-5), &mut buf);
        attr(9, "a.double", Value::Double(0.25), &mut buf);
        attr(9, "a.bool", Value::Bool(true), &mut buf);
        attr_strs(9, "a.list", ["p:pass", "q:blocked"].into_iter(), &mut buf);
        attr_strs(9, "a.empty", std::iter::empty(), &mut buf);
        status(15, 2, "boom", &mut buf);
        let s = Span::decode(buf.as_slice()).unwrap();
        assert_eq!(s.trace_id, [7; 16]);
        assert_eq!((s.name.as_str(), s.kind, s.flags), ("chat m1", 3, 0x301));
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        let v = |kv: &KeyValue| kv.value.clone().unwrap().value.unwrap();
        assert_eq!(v(&s.attributes[0]), any_value::Value::StringValue(long));
        assert_eq!(v(&s.attributes[1]), any_value::Value::IntValue(1 << 40));
        assert_eq!(v(&s.attributes[2]), any_value::Value::IntValue(-5));
        assert_eq!(v(&s.attributes[3]), any_value::Value::DoubleValue(0.25));
        assert_eq!(v(&s.attributes[4]), any_value::Value::BoolValue(true));
        match v(&s.attributes[5]) {
            any_value::Value::ArrayValue(a) => assert_eq!(a.values.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.attributes[6].key, "a.empty");
        let st = s.status.unwrap();
        assert_eq!((st.code, st.message.as_str()), (2, "boom"));
    }
}
