// Keeps romulus_testlib non-empty before any helper lands.
