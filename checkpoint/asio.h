// The one include of Boost.Asio for Romulus.
//
// Boost 1.74's asio/awaitable.hpp uses std::exchange without including
// <utility>, which g++ 12 in C++20 mode rejects; including it first here keeps
// that workaround in one place.
#pragma once

#include <utility>

#include <boost/asio.hpp>
