//! Conversion between Python objects and JSON values (metadata and options).

use diaspora_api::{Metadata, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

/// Deepest nesting accepted from Python (deeper input is an error, not a stack overflow).
const MAX_DEPTH: usize = 128;

/// A JSON-like Python object (dict, list, tuple, str, int, float, bool, None) as a JSON value.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    to_value_at(obj, what, 0)
}

fn to_value_at(obj: &Bound<'_, PyAny>, what: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{what} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyValueError::new_err(format!(
            "{what} holds an integer outside the 64-bit range"
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!("{what} holds {f}, which JSON cannot represent"))
            });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{what} has a key of type {}; JSON object keys must be str",
                    type_name(&k)
                ))
            })?;
            map.insert(key.to_str()?.to_owned(), to_value_at(&v, what, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in obj.try_iter()? {
            out.push(to_value_at(&item?, what, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    Err(PyTypeError::new_err(format!(
        "{what} holds a value of type {}, which is not JSON-serializable",
        type_name(obj)
    )))
}

/// A JSON value as a Python object.
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// Options given as a dict (or None: an empty object).
pub(crate) fn options(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Value> {
    match obj {
        None => Ok(Value::Object(Default::default())),
        Some(o) if o.is_none() => Ok(Value::Object(Default::default())),
        Some(o) if o.is_instance_of::<PyDict>() => to_value(o, what),
        Some(o) => Err(PyTypeError::new_err(format!(
            "{what} must be a dict, not {}",
            type_name(o)
        ))),
    }
}

/// Event metadata: a JSON `str` (or bytes), validated; or a JSON-like object.
pub(crate) fn metadata(obj: &Bound<'_, PyAny>) -> PyResult<Metadata> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Metadata::from_json_str(s.to_str()?).map_err(crate::error::err);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Metadata::from_json_bytes(diaspora_api::Bytes::copy_from_slice(b.as_bytes()))
            .map_err(crate::error::err);
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Metadata::from_json_bytes(diaspora_api::Bytes::from(b.to_vec()))
            .map_err(crate::error::err);
    }
    Ok(Metadata::from_value(to_value(obj, "metadata")?))
}

/// Metadata as a Python object (a dict for JSON objects).
pub(crate) fn metadata_to_py<'py>(py: Python<'py>, m: &Metadata) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, m.json().map_err(crate::error::err)?)
}

/// The type name of an object, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}
