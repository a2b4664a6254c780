//! Receipt handles: what a consumer gets with each delivery and gives back to ack it or to change
//! its invisible time. Text `v1.<queue id>.<queue offset>.<pop id hex>.<broker name>`; the pop id
//! is a random 64-bit number drawn for each delivery, so a handle cannot be guessed and a handle
//! from an earlier delivery of the same message no longer matches (it is stale).

/// A parsed receipt handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHandle {
    /// Queue of the delivered message.
    pub queue_id: u32,
    /// Its queue offset.
    pub queue_offset: u64,
    /// Random id of this delivery.
    pub pop_id: u64,
    /// Broker group that delivered it.
    pub broker_name: String,
}

impl ReceiptHandle {
    /// The handle's text form.
    pub fn encode(&self) -> String {
        format!("v1.{}.{}.{:016x}.{}", self.queue_id, self.queue_offset, self.pop_id, self.broker_name)
    }

    /// Parses a handle. Errors: anything not produced by [`ReceiptHandle::encode`] (`None`).
    pub fn decode(s: &str) -> Option<ReceiptHandle> {
        let mut it = s.splitn(5, '.');
        if it.next()? != "v1" {
            return None;
        }
        let queue_id = it.next()?.parse().ok()?;
        let queue_offset = it.next()?.parse().ok()?;
        let pop = it.next()?;
        let pop_id = u64::from_str_radix(pop, 16).ok().filter(|_| pop.len() == 16)?;
        let broker_name = it.next()?.to_string();
        Some(ReceiptHandle { queue_id, queue_offset, pop_id, broker_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_forgeries() {
        let h = ReceiptHandle { queue_id: 3, queue_offset: 99, pop_id: 0xdead_beef, broker_name: "broker-a.x".into() };
        assert_eq!(ReceiptHandle::decode(&h.encode()), Some(h));
        for bad in [
            "",
            "v1",
            "v2.1.2.00000000deadbeef.b",
            "v1.x.2.00000000deadbeef.b",
            "v1.1.2.beef.b",
            "v1.1.2.00000000deadbeef",
        ] {
            assert_eq!(ReceiptHandle::decode(bad), None, "{bad}");
        }
    }
}
