// Minimal binary PPM (P6, maxval 255) reader: dependency-free image input for the edge runner.
#pragma once

#include <string>

#include "mrface_edge/preprocess.h"

namespace mrface_edge {

// Reads an RGB P6 file; throws std::runtime_error naming the file and the problem.
Image read_ppm(const std::string& path);

}  // namespace mrface_edge
