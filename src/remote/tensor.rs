//! Tensors as the Open Inference Protocol carries them: a name, a datatype, a shape and
//! row-major data, either typed (JSON, gRPC `contents`) or raw little-endian bytes.

use std::borrow::Cow;

use super::{Bytes, Error, ErrorKind};

/// A tensor's elements, widened to one type per family.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Bool(Vec<bool>),
    /// UINT8 input frames stay bytes, shared: a frame is not copied per request or hedge.
    U8(Bytes),
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Float(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Bool(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::UInt(v) => v.len(),
            Data::Float(v) => v.len(),
            Data::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in `range` (which must lie within), of the same kind.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Data {
        match self {
            Data::Bool(v) => Data::Bool(v[range].to_vec()),
            Data::U8(v) => Data::U8(v.slice(range)),
            Data::Int(v) => Data::Int(v[range].to_vec()),
            Data::UInt(v) => Data::UInt(v[range].to_vec()),
            Data::Float(v) => Data::Float(v[range].to_vec()),
            Data::Bytes(v) => Data::Bytes(v[range].to_vec()),
        }
    }

    /// The elements as numbers, where they are numbers.
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Data::UInt(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Float(v) => v.clone(),
            Data::Bool(_) | Data::Bytes(_) => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// `UINT8`, `FP32`, `BYTES`, … as the protocol spells them.
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Data,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadResponse, message)
}

/// The number of elements a shape holds.
pub(crate) fn element_count(shape: &[i64]) -> Result<usize, Error> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension in {shape:?}")))?;
        n.checked_mul(d)
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))
    })
}

/// Bytes per element of a fixed-size datatype; `None` for BYTES.
pub(crate) fn element_size(datatype: &str) -> Result<Option<usize>, Error> {
    Ok(Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        "BYTES" => return Ok(None),
        other => return Err(bad(format!("unknown datatype `{other}`"))),
    }))
}

fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

impl Tensor {
    /// Decodes raw little-endian contents (gRPC `raw_output_contents`, the binary
    /// extension) and checks them against the shape.
    pub fn from_raw(
        name: String,
        datatype: String,
        shape: Vec<i64>,
        raw: &[u8],
    ) -> Result<Tensor, Error> {
        let count = element_count(&shape)?;
        let data = match element_size(&datatype)? {
            Some(size) => {
                if raw.len() != count.saturating_mul(size) {
                    return Err(bad(format!(
                        "output `{name}`: {} bytes for {count} elements of {datatype}",
                        raw.len()
                    )));
                }
                decode_fixed(&datatype, raw)
            }
            None => {
                let mut items = Vec::with_capacity(count.min(raw.len() / 4));
                let mut rest = raw;
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or_else(|| bad(format!("output `{name}`: truncated BYTES")))?;
                    let len = u32::from_le_bytes(*len) as usize;
                    if tail.len() < len {
                        return Err(bad(format!("output `{name}`: truncated BYTES element")));
                    }
                    items.push(tail[..len].to_vec());
                    rest = &tail[len..];
                }
                if items.len() != count {
                    return Err(bad(format!(
                        "output `{name}`: {} BYTES elements for shape {shape:?}",
                        items.len()
                    )));
                }
                Data::Bytes(items)
            }
        };
        Ok(Tensor {
            name,
            datatype,
            shape,
            data,
        })
    }

    /// Checks that typed data fits the shape and datatype.
    pub fn checked(self) -> Result<Tensor, Error> {
        let count = element_count(&self.shape)?;
        if self.data.len() != count {
            return Err(bad(format!(
                "output `{}`: {} elements for shape {:?}",
                self.name,
                self.data.len(),
                self.shape
            )));
        }
        element_size(&self.datatype)?;
        Ok(self)
    }

    /// The contents as raw little-endian bytes, frames (UINT8) borrowed rather than copied.
    pub fn raw(&self) -> Cow<'_, [u8]> {
        match &self.data {
            Data::U8(v) => Cow::Borrowed(v),
            _ => Cow::Owned(self.encode_raw()),
        }
    }

    /// As [`Tensor::raw`], owned but shared: a frame is handed over without a copy.
    pub fn raw_shared(&self) -> Bytes {
        match &self.data {
            Data::U8(v) => v.clone(),
            _ => Bytes::from(self.encode_raw()),
        }
    }

    /// Encodes any datatype (inputs only carry UINT8 here).
    fn encode_raw(&self) -> Vec<u8> {
        match &self.data {
            Data::U8(v) => v.to_vec(),
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            Data::Int(v) => match self.datatype.as_str() {
                "INT8" => v.iter().map(|&x| x as i8 as u8).collect(),
                "INT16" => v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
                "INT32" => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            },
            Data::UInt(v) => match self.datatype.as_str() {
                "UINT8" => v.iter().map(|&x| x as u8).collect(),
                "UINT16" => v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect(),
                "UINT32" => v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            },
            Data::Float(v) => match self.datatype.as_str() {
                "FP32" => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            },
            Data::Bytes(v) => v
                .iter()
                .flat_map(|b| (b.len() as u32).to_le_bytes().into_iter().chain(b.clone()))
                .collect(),
        }
    }

    /// The tensor as the JSON `data` member: a flat row-major array.
    pub fn json_data(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.data {
            Data::U8(v) => Value::from(&v[..]),
            Data::Bool(v) => Value::from(v.as_slice()),
            Data::Int(v) => Value::from(v.as_slice()),
            Data::UInt(v) => Value::from(v.as_slice()),
            Data::Float(v) => Value::from(v.as_slice()),
            Data::Bytes(v) => Value::Array(
                v.iter()
                    .map(|b| Value::from(String::from_utf8_lossy(b).into_owned()))
                    .collect(),
            ),
        }
    }

    /// Reads a JSON `data` member (flat or nested row-major arrays) for `datatype`.
    pub fn from_json(
        name: String,
        datatype: String,
        shape: Vec<i64>,
        data: &serde_json::Value,
    ) -> Result<Tensor, Error> {
        let mut flat = Vec::new();
        flatten(data, &mut flat);
        let what = |v: &serde_json::Value| bad(format!("output `{name}`: {v} is not {datatype}"));
        let data = match datatype.as_str() {
            "BOOL" => Data::Bool(
                flat.iter()
                    .map(|v| v.as_bool().ok_or_else(|| what(v)))
                    .collect::<Result<_, _>>()?,
            ),
            "UINT8" | "UINT16" | "UINT32" | "UINT64" => Data::UInt(
                flat.iter()
                    .map(|v| v.as_u64().ok_or_else(|| what(v)))
                    .collect::<Result<_, _>>()?,
            ),
            "INT8" | "INT16" | "INT32" | "INT64" => Data::Int(
                flat.iter()
                    .map(|v| v.as_i64().ok_or_else(|| what(v)))
                    .collect::<Result<_, _>>()?,
            ),
            "FP16" | "BF16" | "FP32" | "FP64" => Data::Float(
                flat.iter()
                    .map(|v| v.as_f64().ok_or_else(|| what(v)))
                    .collect::<Result<_, _>>()?,
            ),
            "BYTES" => Data::Bytes(
                flat.iter()
                    .map(|v| {
                        v.as_str()
                            .map(|s| s.as_bytes().to_vec())
                            .ok_or_else(|| what(v))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(bad(format!("output `{name}`: unknown datatype `{other}`"))),
        };
        Tensor {
            name,
            datatype,
            shape,
            data,
        }
        .checked()
    }
}

fn flatten<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn decode_fixed(datatype: &str, raw: &[u8]) -> Data {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N)
            .map(|c| c.try_into().expect("exact chunks"))
    }
    match datatype {
        "BOOL" => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        "UINT8" => Data::UInt(raw.iter().map(|&b| b as u64).collect()),
        "INT8" => Data::Int(raw.iter().map(|&b| b as i8 as i64).collect()),
        "UINT16" => Data::UInt(
            chunks::<2>(raw)
                .map(|c| u16::from_le_bytes(c) as u64)
                .collect(),
        ),
        "INT16" => Data::Int(
            chunks::<2>(raw)
                .map(|c| i16::from_le_bytes(c) as i64)
                .collect(),
        ),
        "UINT32" => Data::UInt(
            chunks::<4>(raw)
                .map(|c| u32::from_le_bytes(c) as u64)
                .collect(),
        ),
        "INT32" => Data::Int(
            chunks::<4>(raw)
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
        ),
        "UINT64" => Data::UInt(chunks::<8>(raw).map(u64::from_le_bytes).collect()),
        "INT64" => Data::Int(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
        "FP16" => Data::Float(
            chunks::<2>(raw)
                .map(|c| half_to_f64(u16::from_le_bytes(c)))
                .collect(),
        ),
        "BF16" => Data::Float(
            chunks::<2>(raw)
                .map(|c| f32::from_bits((u16::from_le_bytes(c) as u32) << 16) as f64)
                .collect(),
        ),
        "FP32" => Data::Float(
            chunks::<4>(raw)
                .map(|c| f32::from_le_bytes(c) as f64)
                .collect(),
        ),
        _ => Data::Float(chunks::<8>(raw).map(f64::from_le_bytes).collect()),
    }
}
