//! Release jobs end to end (being written).
