//! Admission of peer requests with bodies (`/sync`, `/push`): limits are
//! taken *before* a byte of the body is read.
//!
//! Order: a concurrency slot (total, and per source address), then a byte
//! reservation for the declared length (or, for chunked bodies, per chunk)
//! against a total and a per-address budget, then the body is read within a
//! deadline. The slot and the bytes stay reserved until the request's
//! handling ends (the parsed body lives that long). Anything over a limit is
//! answered at once: 503 (busy), 413 (too large) or 408 (too slow).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};

use super::HttpError;
use futures_util::StreamExt;

/// Limits of [`Intake`].
#[derive(Debug, Clone, Copy)]
pub struct IntakeLimits {
    /// Requests handled at once, in total.
    pub slots: usize,
    /// Requests handled at once from one source address.
    pub slots_per_address: usize,
    /// Body bytes held at once, in total.
    pub bytes: usize,
    /// Body bytes held at once for one source address.
    pub bytes_per_address: usize,
    /// Time allowed to receive a whole body.
    pub body_deadline: Duration,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            slots: 16,
            slots_per_address: 4,
            bytes: 96 << 20,
            bytes_per_address: crate::federation::wire::MAX_BUNDLE_BYTES,
            body_deadline: Duration::from_secs(10),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntakeError {
    /// Every slot, or this address's share, is taken.
    #[error("busy")]
    Busy,
    /// The byte budget (total or this address's) is spent.
    #[error("too many bytes in flight")]
    NoBudget,
    /// The body is larger than the endpoint accepts.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive within the deadline.
    #[error("body not received within {0} s")]
    TooSlow(u64),
    /// The body stream failed.
    #[error("body: {0}")]
    Body(String),
}

impl From<IntakeError> for HttpError {
    fn from(e: IntakeError) -> Self {
        let message = e.to_string().into();
        match e {
            IntakeError::Busy | IntakeError::NoBudget => HttpError::Unavailable {
                message,
                retry_after: Some(1),
            },
            IntakeError::TooLarge(_) => HttpError::TooLarge(message),
            IntakeError::TooSlow(_) => HttpError::Timeout(message),
            IntakeError::Body(_) => HttpError::BadRequest(message),
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

/// The accounting (pure): slots and bytes per address and in total.
#[derive(Debug, Default)]
pub struct Budget {
    slots: usize,
    bytes: usize,
    by_addr: HashMap<IpAddr, (usize, usize)>,
}

impl Budget {
    /// Takes a slot for `ip` if both limits allow.
    pub fn take_slot(&mut self, ip: IpAddr, l: &IntakeLimits) -> bool {
        let e = self.by_addr.entry(ip).or_default();
        if self.slots >= l.slots || e.0 >= l.slots_per_address {
            if *e == (0, 0) {
                self.by_addr.remove(&ip);
            }
            return false;
        }
        e.0 += 1;
        self.slots += 1;
        true
    }

    /// Reserves `n` bytes for `ip` if both budgets allow.
    pub fn take_bytes(&mut self, ip: IpAddr, n: usize, l: &IntakeLimits) -> bool {
        let have = self.by_addr.get(&ip).map_or(0, |e| e.1);
        if self.bytes.saturating_add(n) > l.bytes || have.saturating_add(n) > l.bytes_per_address {
            return false;
        }
        self.bytes += n;
        self.by_addr.entry(ip).or_default().1 += n;
        true
    }

    /// Returns a slot and `n` bytes of `ip`.
    pub fn release(&mut self, ip: IpAddr, slot: bool, n: usize) {
        self.slots = self.slots.saturating_sub(usize::from(slot));
        self.bytes = self.bytes.saturating_sub(n);
        if let Some(e) = self.by_addr.get_mut(&ip) {
            e.0 = e.0.saturating_sub(usize::from(slot));
            e.1 = e.1.saturating_sub(n);
            if *e == (0, 0) {
                self.by_addr.remove(&ip);
            }
        }
    }

    /// (slots, bytes) in use.
    pub fn in_use(&self) -> (usize, usize) {
        (self.slots, self.bytes)
    }
}

/// Admission control shared by the peer endpoints.
#[derive(Debug)]
pub struct Intake {
    limits: IntakeLimits,
    budget: Arc<Mutex<Budget>>,
}

/// A held slot and byte reservation; released on drop.
#[derive(Debug)]
pub struct Admitted {
    budget: Arc<Mutex<Budget>>,
    ip: IpAddr,
    bytes: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut b) = self.budget.lock() {
            b.release(self.ip, true, self.bytes);
        }
    }
}

impl Admitted {
    fn reserve(&mut self, n: usize, l: &IntakeLimits) -> Result<(), IntakeError> {
        let ok = self
            .budget
            .lock()
            .is_ok_and(|mut b| b.take_bytes(self.ip, n, l));
        if !ok {
            return Err(IntakeError::NoBudget);
        }
        self.bytes += n;
        Ok(())
    }
}

impl Intake {
    /// Admission control with these limits.
    pub fn new(limits: IntakeLimits) -> Self {
        Self {
            limits,
            budget: Arc::new(Mutex::new(Budget::default())),
        }
    }

    /// (slots, bytes) in use now.
    pub fn in_use(&self) -> (usize, usize) {
        self.budget.lock().map_or((0, 0), |b| b.in_use())
    }

    /// Takes a slot for `ip`, then reads `body` (at most `max` bytes) under
    /// the byte budgets and the deadline. The returned guard keeps slot and
    /// bytes reserved; drop it when the parsed body is gone.
    pub async fn read(
        &self,
        ip: IpAddr,
        declared: Option<u64>,
        body: Body,
        max: usize,
    ) -> Result<(Vec<u8>, Admitted), IntakeError> {
        let l = &self.limits;
        let taken = self.budget.lock().is_ok_and(|mut b| b.take_slot(ip, l));
        if !taken {
            return Err(IntakeError::Busy);
        }
        let mut adm = Admitted {
            budget: self.budget.clone(),
            ip,
            bytes: 0,
        };
        let mut buf = Vec::new();
        if let Some(n) = declared {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > max {
                return Err(IntakeError::TooLarge(max));
            }
            adm.reserve(n, l)?;
            buf.reserve_exact(n);
        }
        let read = async {
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| IntakeError::Body(e.to_string()))?;
                let len = buf.len() + chunk.len();
                if len > max {
                    return Err(IntakeError::TooLarge(max));
                }
                if len > adm.bytes {
                    // Chunked (or lying) body: reserve in 1 MiB steps.
                    let step = (len - adm.bytes).max(1 << 20).min(max - adm.bytes);
                    adm.reserve(step, l)?;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(())
        };
        match tokio::time::timeout(l.body_deadline, read).await {
            Ok(Ok(())) => Ok((buf, adm)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(IntakeError::TooSlow(l.body_deadline.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> IntakeLimits {
        IntakeLimits {
            slots: 4,
            slots_per_address: 2,
            bytes: 100,
            bytes_per_address: 60,
            body_deadline: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let l = limits();
        let mut b = Budget::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let c: IpAddr = [10, 0, 0, 2].into();
        assert!(b.take_slot(a, &l));
        assert!(b.take_slot(a, &l));
        assert!(!b.take_slot(a, &l), "per-address slots");
        assert!(b.take_bytes(a, 60, &l));
        assert!(!b.take_bytes(a, 1, &l), "per-address bytes");
        assert!(b.take_slot(c, &l));
        assert!(b.take_bytes(c, 40, &l));
        assert!(!b.take_bytes(c, 1, &l), "total bytes");
        b.release(a, true, 60);
        b.release(a, true, 0);
        assert!(b.take_bytes(c, 20, &l));
        assert_eq!(b.in_use(), (1, 60));
    }

    #[tokio::test]
    async fn limits_apply_before_and_while_reading() {
        let intake = Intake::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        // Declared too large: refused before reading.
        let e = intake
            .read(ip, Some(1000), Body::from("x"), 50)
            .await
            .unwrap_err();
        assert_eq!(e, IntakeError::TooLarge(50));
        // Declared within the endpoint's limit but over the address's budget.
        let e = intake
            .read(ip, Some(61), Body::from("x"), 1000)
            .await
            .unwrap_err();
        assert_eq!(e, IntakeError::NoBudget);
        // A body that never ends is cut at the deadline.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
        let never = Body::from_stream(tokio_stream_from(rx));
        let e = intake.read(ip, None, never, 50).await.unwrap_err();
        assert_eq!(e, IntakeError::TooSlow(1));
        let (body, adm) = intake
            .read(ip, None, Body::from("hello"), 50)
            .await
            .unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(intake.in_use().0, 1);
        drop(adm);
        assert_eq!(intake.in_use(), (0, 0), "everything released");
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    proptest! {
        /// Usage never exceeds a limit, and releasing everything returns to zero.
        #[test]
        fn never_over_budget(ops in proptest::collection::vec((0u8..3, 0u8..3, 0usize..80), 0..200)) {
            let l = limits();
            let mut b = Budget::default();
            let mut held: Vec<(IpAddr, bool, usize)> = vec![];
            for (who, op, n) in ops {
                let ip: IpAddr = [10, 0, 0, who].into();
                match op {
                    0 => if b.take_slot(ip, &l) { held.push((ip, true, 0)); },
                    1 => if b.take_bytes(ip, n, &l) { held.push((ip, false, n)); },
                    _ => if let Some((ip, s, n)) = held.pop() { b.release(ip, s, n); },
                }
                let (s, by) = b.in_use();
                prop_assert!(s <= l.slots && by <= l.bytes);
                for (_, (s, by)) in b.by_addr.iter() {
                    prop_assert!(*s <= l.slots_per_address && *by <= l.bytes_per_address);
                }
            }
            for (ip, s, n) in held.drain(..) { b.release(ip, s, n); }
            prop_assert_eq!(b.in_use(), (0, 0));
            prop_assert!(b.by_addr.is_empty());
        }
    }
}
