//! Message composition: DKIM signing, RFC 3464 bounces, trace headers.
