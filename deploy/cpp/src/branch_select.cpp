#include "mrface_edge/branch_select.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mrface_edge {

Indicator parse_indicator(const std::string& name) {
  if (name == "max") return Indicator::Max;
  if (name == "mean") return Indicator::Mean;
  if (name == "min") return Indicator::Min;
  throw std::invalid_argument("indicator '" + name + "': expected max, mean or min");
}

Strategy parse_strategy(const std::string& name) {
  if (name == "ceil") return Strategy::Ceil;
  if (name == "near") return Strategy::Near;
  if (name == "floor") return Strategy::Floor;
  throw std::invalid_argument("strategy '" + name + "': expected ceil, near or floor");
}

double size_indicator(int width, int height, Indicator indicator) {
  switch (indicator) {
    case Indicator::Max: return std::max(width, height);
    case Indicator::Mean: return (width + height) / 2.0;
    case Indicator::Min: return std::min(width, height);
  }
  return std::max(width, height);
}

int choose_resolution(double size, std::vector<int> res, Strategy strategy) {
  if (res.empty()) throw std::invalid_argument("choose_resolution: expected at least one branch resolution");
  std::sort(res.begin(), res.end());
  res.erase(std::unique(res.begin(), res.end()), res.end());
  switch (strategy) {
    case Strategy::Ceil:
      for (int r : res) if (r >= size) return r;
      return res.back();
    case Strategy::Floor:
      for (auto it = res.rbegin(); it != res.rend(); ++it) if (*it <= size) return *it;
      return res.front();
    case Strategy::Near: {
      int best = res.front();
      for (int r : res) {  // ascending, strict '<' keeps the smaller one on ties
        if (std::abs(size - r) < std::abs(size - best)) best = r;
      }
      return best;
    }
  }
  return res.back();
}

}  // namespace mrface_edge
