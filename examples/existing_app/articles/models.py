"""The application's own models; its alembic history manages exactly these tables."""

from __future__ import annotations

from sqlalchemy import Identity, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    section: Mapped[str] = mapped_column(Text)
    published: Mapped[bool] = mapped_column(server_default=true())
