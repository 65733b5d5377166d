//! Images end to end (being written).
