//! ZEO 3/4 `digest` login calls, typed.
//!
//! A server that requires authentication expects three calls between the
//! handshake and `register`: `getAuthProtocol()`, `auth_get_challenge()` and
//! `auth_response((user, challenge, response))`. They are not ZEO 5 methods,
//! so [`ServerRequest::parse`](crate::ServerRequest::parse) does not know
//! them; [`LoginMethod::of`] recognises them first and [`LoginRequest::parse`]
//! checks their arguments, with the `TypeError` texts the server answers.
//!
//! ```
//! use zeo_pickle::Value;
//! use zeo_protocol::{LoginMethod, LoginRequest, Message};
//!
//! let creds = Value::Tuple(vec![Value::str("alice"), Value::str("c"), Value::str("r")]);
//! let message = Message::call(7, "auth_response", vec![creds]);
//! let method = LoginMethod::of(&message).unwrap();
//! assert_eq!(method, LoginMethod::Response);
//! let request = LoginRequest::parse(method, &message).unwrap();
//! assert_eq!(
//!     request,
//!     LoginRequest::Response { user: "alice".into(), challenge: "c".into(), response: "r".into() }
//! );
//! ```

use zeo_pickle::Value;

use crate::message::Message;
use crate::wire_error::WireError;

/// Which login call a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMethod {
    /// `getAuthProtocol()`: the protocol name, or `None` without
    /// authentication.
    GetAuthProtocol,
    /// `auth_get_challenge()`: `(realm, challenge, key_nonce)`.
    GetChallenge,
    /// `auth_response((user, challenge, response))`: `True`, `False` or an
    /// error.
    Response,
}

impl LoginMethod {
    /// The login call `message` makes, or `None` for a heartbeat or any
    /// other method.
    pub fn of(message: &Message) -> Option<LoginMethod> {
        if message.is_heartbeat() {
            return None;
        }
        match message.method.as_str() {
            "getAuthProtocol" => Some(LoginMethod::GetAuthProtocol),
            "auth_get_challenge" => Some(LoginMethod::GetChallenge),
            "auth_response" => Some(LoginMethod::Response),
            _ => None,
        }
    }

    /// The method name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            LoginMethod::GetAuthProtocol => "getAuthProtocol",
            LoginMethod::GetChallenge => "auth_get_challenge",
            LoginMethod::Response => "auth_response",
        }
    }

    fn arity(self) -> usize {
        usize::from(self == LoginMethod::Response)
    }
}

/// A login call with checked arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginRequest {
    /// `getAuthProtocol()`.
    GetAuthProtocol,
    /// `auth_get_challenge()`.
    GetChallenge,
    /// `auth_response((user, challenge, response))`.
    Response {
        /// The user name.
        user: String,
        /// The challenge the client answers (hex).
        challenge: String,
        /// The client's response (hex).
        response: String,
    },
}

impl LoginRequest {
    /// Checks the arguments of `message`, a call of `method`. The error is
    /// the `TypeError` to answer; the connection stays open.
    pub fn parse(method: LoginMethod, message: &Message) -> Result<LoginRequest, WireError> {
        let args: &[Value] = match &message.args {
            Value::Tuple(items) | Value::List(items) => items,
            _ => &[],
        };
        let wanted = method.arity();
        if args.len() != wanted {
            return Err(WireError::type_error(&format!(
                "{}() takes {wanted} argument(s) but {} were given",
                method.name(),
                args.len()
            )));
        }
        match method {
            LoginMethod::GetAuthProtocol => Ok(LoginRequest::GetAuthProtocol),
            LoginMethod::GetChallenge => Ok(LoginRequest::GetChallenge),
            LoginMethod::Response => credentials(&args[0]).ok_or_else(|| {
                WireError::type_error(
                    "auth_response() takes a (user, challenge, response) tuple of strings",
                )
            }),
        }
    }
}

fn credentials(arg: &Value) -> Option<LoginRequest> {
    let text = |v: &Value| match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    let (Value::Tuple(items) | Value::List(items)) = arg else {
        return None;
    };
    let [user, challenge, response] = items.as_slice() else {
        return None;
    };
    Some(LoginRequest::Response {
        user: text(user)?,
        challenge: text(challenge)?,
        response: text(response)?,
    })
}

/// The answer to `getAuthProtocol()`: the protocol name, or `None` when the
/// server requires no login.
pub fn protocol_reply(protocol: Option<&str>) -> Value {
    protocol.map_or(Value::None, |p| Value::Str(p.to_owned()))
}

/// The answer to `auth_get_challenge()`: `(realm, challenge, key_nonce)`.
pub fn challenge_reply(realm: &str, challenge: &str, key_nonce: &str) -> Value {
    Value::Tuple(vec![
        Value::Str(realm.to_owned()),
        Value::Str(challenge.to_owned()),
        Value::Str(key_nonce.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, args: Vec<Value>) -> Message {
        Message::call(1, method, args)
    }

    #[test]
    fn recognises_the_three_login_methods_only() {
        assert_eq!(
            LoginMethod::of(&call("getAuthProtocol", vec![])),
            Some(LoginMethod::GetAuthProtocol)
        );
        assert_eq!(
            LoginMethod::of(&call("auth_get_challenge", vec![])),
            Some(LoginMethod::GetChallenge)
        );
        assert_eq!(LoginMethod::of(&call("register", vec![])), None);
    }

    #[test]
    fn wrong_argument_counts_are_type_errors() {
        let m = call("auth_get_challenge", vec![Value::Int(1)]);
        let err = LoginRequest::parse(LoginMethod::GetChallenge, &m).unwrap_err();
        assert_eq!(
            err,
            WireError::type_error("auth_get_challenge() takes 0 argument(s) but 1 were given")
        );
        let m = call("auth_response", vec![]);
        let err = LoginRequest::parse(LoginMethod::Response, &m).unwrap_err();
        assert_eq!(
            err,
            WireError::type_error("auth_response() takes 1 argument(s) but 0 were given")
        );
    }

    #[test]
    fn credentials_must_be_three_strings() {
        let bad = [
            Value::Int(3),
            Value::Tuple(vec![Value::str("a"), Value::str("b")]),
            Value::Tuple(vec![Value::str("a"), Value::Int(1), Value::str("c")]),
            Value::List(vec![
                Value::str("a"),
                Value::Bytes(vec![0xff]),
                Value::str("c"),
            ]),
        ];
        for arg in bad {
            let m = call("auth_response", vec![arg.clone()]);
            let err = LoginRequest::parse(LoginMethod::Response, &m).unwrap_err();
            assert_eq!(err.class, "builtins.TypeError", "{arg:?}");
        }
        let m = call(
            "auth_response",
            vec![Value::List(vec![
                Value::Bytes(b"u".to_vec()),
                Value::str("c"),
                Value::str("r"),
            ])],
        );
        assert_eq!(
            LoginRequest::parse(LoginMethod::Response, &m).unwrap(),
            LoginRequest::Response {
                user: "u".into(),
                challenge: "c".into(),
                response: "r".into()
            }
        );
    }

    #[test]
    fn replies_have_the_python_shapes() {
        assert_eq!(protocol_reply(None), Value::None);
        assert_eq!(protocol_reply(Some("digest")), Value::str("digest"));
        assert_eq!(
            challenge_reply("r", "c", "n"),
            Value::Tuple(vec![Value::str("r"), Value::str("c"), Value::str("n")])
        );
    }
}
