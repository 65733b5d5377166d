//! Remote cache end to end (being written).
