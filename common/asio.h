// The one include of Boost.Asio for Romulus (common/ and the layers above).
//
// <utility> first: Boost's asio/awaitable.hpp has used std::exchange without
// including it (1.74 with g++ 12 in C++20 mode); harmless where fixed.
#pragma once

#include <utility>

#include <boost/asio.hpp>
