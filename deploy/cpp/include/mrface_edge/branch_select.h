// Test-time branch choice, identical to mrface.models.branch_select (REFERENCE.md §2).
//
// indicator: one size from a face's raw (w, h): max, mean or min.
// strategy:  ceil (smallest branch >= size, else the largest), near (nearest, ties to the smaller),
//            floor (largest branch <= size, else the smallest).
// With branches {112, 28, 14, 7}: ceil >=29->112, 15-28->28, 8-14->14, <=7->7.
#pragma once

#include <string>
#include <vector>

namespace mrface_edge {

enum class Indicator { Max, Mean, Min };
enum class Strategy { Ceil, Near, Floor };

Indicator parse_indicator(const std::string& name);  // throws std::invalid_argument naming the choices
Strategy parse_strategy(const std::string& name);

double size_indicator(int width, int height, Indicator indicator);

// Branch resolution for an indicator size; `resolutions` in any order, must be non-empty.
int choose_resolution(double size, std::vector<int> resolutions, Strategy strategy);

}  // namespace mrface_edge
