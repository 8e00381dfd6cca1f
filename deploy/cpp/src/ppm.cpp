#include "mrface_edge/ppm.h"

#include <cctype>
#include <fstream>
#include <stdexcept>

namespace mrface_edge {
namespace {

// Next header token, skipping whitespace and '#' comments.
std::string token(std::istream& in) {
  std::string t;
  char ch;
  while (in.get(ch)) {
    if (ch == '#') {
      std::string rest;
      std::getline(in, rest);
    } else if (!std::isspace(static_cast<unsigned char>(ch))) {
      t.push_back(ch);
      while (in.get(ch) && !std::isspace(static_cast<unsigned char>(ch))) t.push_back(ch);
      return t;
    }
  }
  return t;
}

}  // namespace

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  if (token(in) != "P6") throw std::runtime_error(path + ": not a binary PPM (expected magic P6)");
  Image image;
  try {
    image.width = std::stoi(token(in));
    image.height = std::stoi(token(in));
    if (std::stoi(token(in)) != 255) throw std::runtime_error(path + ": expected maxval 255");
  } catch (const std::logic_error&) {
    throw std::runtime_error(path + ": malformed PPM header");
  }
  if (image.width < 1 || image.height < 1) throw std::runtime_error(path + ": empty image");
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  in.read(reinterpret_cast<char*>(image.pixels.data()), static_cast<std::streamsize>(image.pixels.size()));
  if (in.gcount() != static_cast<std::streamsize>(image.pixels.size())) {
    throw std::runtime_error(path + ": truncated pixel data");
  }
  return image;
}

}  // namespace mrface_edge
